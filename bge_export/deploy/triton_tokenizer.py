"""Triton Python-backend model, written by `bge-export triton` as <repository>/<name>_tokenizer/1/model.py.

Strings in, token ids out, exactly as bge-export's TextTokenizer (bge_export/model/tokenization.py) makes them for
the encoder graph: the export folder's tokenizer.json (copied beside this file), the text lower-cased when the
model says so, truncated at the model's max_seq_length (longest_first, special tokens kept), no padding by the
tokenizer; then each request is right-padded to its longest text with the pad id, with an attention mask of
1 for tokens and 0 for padding, and token_type_ids of zeros. A cross-encoder's model takes a query and a
document per row and tokenizes them as one pair (truncated longest first), token types 0 then 1.

The settings come from this model's config.pbtxt `parameters` (max_seq_length, do_lower_case, pad_id,
tokenizer_file); each output's dtype (TYPE_INT64 or TYPE_INT32, whichever the encoder graph takes) and which
outputs exist (token_type_ids only for graphs that take it) come from its `output` list.

This file runs inside Triton's Python backend, next to numpy and the `tokenizers` package (install it into
the backend's Python: pip install tokenizers); it does not import bge_export.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    """text [batch, 1] TYPE_STRING (a cross-encoder's: query and document) -> input_ids, attention_mask[,
    token_type_ids] [batch, sequence]."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.max_seq_length = int(parameters["max_seq_length"])
        self.do_lower_case = parameters.get("do_lower_case", "false") == "true"
        self.pad_id = int(parameters["pad_id"])
        self.left = parameters.get("padding_side", "right") == "left"  # decoder embedders pad on the left
        self.input_names = [tensor["name"] for tensor in config["input"]]  # text, or a cross-encoder's query, document
        self.outputs = []
        for output in config["output"]:
            properties = pb_utils.get_output_config_by_name(config, output["name"])
            self.outputs.append((output["name"], pb_utils.triton_string_to_numpy(properties["data_type"])))
        path = os.path.join(args["model_repository"], args["model_version"],
                            parameters.get("tokenizer_file", "tokenizer.json"))
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length, strategy="longest_first")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                columns = [self._texts(request, name) for name in self.input_names]
                if len({len(column) for column in columns}) > 1:
                    raise ValueError(f"{' and '.join(self.input_names)} hold different numbers of rows")
                texts = columns[0] if len(columns) == 1 else list(zip(*columns))
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=self._tokenize(texts)))
        return responses

    def _texts(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"the request has no '{name}' input")
        texts = []
        for value in tensor.as_numpy().reshape(-1):
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"'{name}' holds bytes that are not UTF-8 text") from None
            texts.append(str(value))
        if self.do_lower_case:
            texts = [text.lower() for text in texts]
        return texts

    def _tokenize(self, texts):
        encodings = self.tokenizer.encode_batch(texts)  # a pair: one sequence, its token types 0 then 1
        width = max(len(encoding.ids) for encoding in encodings)
        input_ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        token_type_ids = np.zeros_like(input_ids)
        for row, encoding in enumerate(encodings):
            ids = encoding.ids
            columns = slice(width - len(ids), width) if self.left else slice(0, len(ids))
            input_ids[row, columns] = ids
            attention_mask[row, columns] = 1
            token_type_ids[row, columns] = encoding.type_ids
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return [pb_utils.Tensor(name, arrays[name].astype(dtype)) for name, dtype in self.outputs]

    def finalize(self):
        self.tokenizer = None
