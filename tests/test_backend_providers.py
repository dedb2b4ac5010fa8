"""Execution-provider choice and batch-shape padding: pure functions, no GPU needed."""

from pathlib import Path

from posecore.backend import choose_providers, padded_batch_sizes

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def test_auto_uses_cuda_when_the_build_has_it_and_cpu_otherwise():
    assert choose_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("auto", [CPU]) == [CPU]
    assert choose_providers("auto", [TRT, CUDA, CPU]) == [CUDA, CPU]  # TensorRT only when asked for


def test_tensorrt_gets_its_engine_cache_and_falls_back_to_cuda_then_cpu():
    chain = choose_providers("tensorrt", [TRT, CUDA, CPU], trt_cache_dir=Path("/cache/trt"), trt_fp16=True)
    (name, options), *rest = chain
    assert name == TRT and rest == [CUDA, CPU]
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == "/cache/trt"
    assert options["trt_fp16_enable"] == "True"


def test_explicit_cpu_never_touches_a_gpu():
    assert choose_providers("cpu", [TRT, CUDA, CPU]) == [CPU]


def test_gpu_batch_shapes_are_powers_of_two_plus_the_max_and_cpu_shapes_are_every_size():
    assert padded_batch_sizes(8, gpu=True) == [1, 2, 4, 8]
    assert padded_batch_sizes(12, gpu=True) == [1, 2, 4, 8, 12]
    assert padded_batch_sizes(4, gpu=False) == [1, 2, 3, 4]
