# gpuconv's benchmark on an NVIDIA GPU: the cupy backend's CUDA kernels (one entry per algorithm) next to
# the NumPy backend and whichever peers the image holds.
#
#   docker build -t gpuconv-bench .                                   # gpuconv only (CuPy + CUDA 13 wheels)
#   docker build -t gpuconv-bench --build-arg PEERS=tf,torch,jax .    # plus GPU TensorFlow, PyTorch, JAX
#   docker run --rm --gpus all -v "$PWD/results:/results" gpuconv-bench [gpuconv bench options]
#
# The host needs an NVIDIA driver for CUDA 13 (>= 580) and the NVIDIA Container Toolkit.
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04

# Ubuntu 24.04's Python 3.12 in a virtual environment (PEP 668 forbids pip on the system Python).
# Not version-pinned: the base image tag fixes the Ubuntu release, and its python3 should keep its
# security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Peers to install besides gpuconv, comma-separated: tf (TensorFlow with its CUDA wheels), torch (the
# PyPI wheel, CUDA included), jax (with its CUDA 13 plugin). Pinned to the versions the benchmark was
# written against. Each adds gigabytes, so none by default.
ARG PEERS=""
RUN case ",$PEERS," in *,tf,*) pip install --no-cache-dir "tensorflow[and-cuda]==2.21.0" ;; esac \
    && case ",$PEERS," in *,torch,*) pip install --no-cache-dir "torch==2.13.0" ;; esac \
    && case ",$PEERS," in *,jax,*) pip install --no-cache-dir "jax[cuda13]==0.10.2" ;; esac

# gpuconv with the CuPy build for CUDA 13 and the CUDA headers NVRTC needs, plus the benchmark's libraries.
# /results is world-writable with the sticky bit (like /tmp), so that `docker run --user` can write it when
# no folder is bind-mounted there (a bind-mounted folder keeps the host's permissions).
COPY . /src
RUN pip install --no-cache-dir "/src[cuda13,bench]" \
    && mkdir -m 1777 /results

# Runs as any user (docker run --user "$(id -u):$(id -g)" keeps the results owned by you): every cache
# (CuPy's compiled kernels, matplotlib's font list) goes to /tmp, and /results (made above) is writable too.
ENV GPUCONV_BENCH_OUT=/results \
    HOME=/tmp \
    CUPY_CACHE_DIR=/tmp/cupy-kernel-cache \
    MPLCONFIGDIR=/tmp/matplotlib
VOLUME ["/results"]
WORKDIR /results
ENTRYPOINT ["gpuconv", "bench"]
CMD []
