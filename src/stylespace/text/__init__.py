"""Search by words: a text encoder trained against a locked image model (LiT), so words land in the image
model's space and find items whether or not they have names.

>>> text_model = train_text_model(image_model, catalog, ids=train_ids)     # or TextModel.load(folder)
>>> text_model.encode(["navy check shirt for men"])                       # (1, D), beside the images
"""
from stylespace.text.config import TextConfig
from stylespace.text.model import QueryText, TextModel, TextModelInfo
from stylespace.text.phrases import ATTRIBUTES, NAME_COLUMNS, item_name, phrase, singular
from stylespace.text.prototypes import text_prototypes, zero_shot_classify
from stylespace.text.tokenizer import TextTokenizer
from stylespace.text.train import train_text_model

__all__ = ["ATTRIBUTES", "NAME_COLUMNS", "QueryText", "TextConfig", "TextModel", "TextModelInfo", "TextTokenizer",
           "item_name", "phrase", "singular", "text_prototypes", "train_text_model", "zero_shot_classify"]
