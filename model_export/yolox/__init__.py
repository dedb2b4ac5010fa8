"""YOLOX, the person detector: the official architecture, both published checkpoint layouts, ONNX export.

`configs` (the official exps' depth/width as data), `model` (CSPDarknet + PAFPN + decoupled head, named key for
key as Megvii's YOLOX), `checkpoint` (Megvii's and mmdetection's layouts, strict), `export` (ONNX + detector card).
"""
