# The embrel image: `make image` (scripts/build-image.sh) builds and tags it; a plain
#   docker build -t embrel/embrel:<version> .
# works too. The embedder variant (spec.source.documents, needs torch):
#   docker build --build-arg EXTRAS=embed -t embrel/embrel:<version>-embed .
#
# Runs as uid/gid 65532 with a read-only root filesystem: everything it writes goes to
# /tmp (HOME, caches, the working directory, the default state dir .embrel) or to the
# state directory the configuration names (the Deployment mounts /var/lib/embrel).

# Any Debian-based image with Python 3.11 and the venv module: python:3.11-slim for
# users; the tests build a local one from Debian packages (no registry reachable).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Empty for the controller image; "embed" adds sentence-transformers and torch.
ARG EXTRAS=""
ARG TORCH_VERSION=2.13.0
# The CPU-only torch wheels (PyPI's Linux torch pulls several GB of CUDA libraries).
# Empty: take torch from wherever pip is configured to look.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/embrel
COPY pyproject.toml README.md /src/
COPY controller /src/controller
# The host's pip settings (index, find-links, constraints) and CA bundle arrive as
# build secrets: mounted for this step only, never stored in a layer. Without them
# pip uses its defaults (PyPI). --no-compile: no .pyc files in the image (the root
# filesystem is read-only, so Python never writes them either).
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    set -eu; \
    if [ -f /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    /opt/embrel/bin/pip install -q --no-compile /src
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    set -eu; \
    [ -n "$EXTRAS" ] || exit 0; \
    if [ -f /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi; \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    case ",$EXTRAS," in *,embed,*) \
        /opt/embrel/bin/pip install -q --no-compile \
            ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}";; \
    esac; \
    /opt/embrel/bin/pip install -q --no-compile "/src[${EXTRAS}]"
# A runtime-only venv: no pip/setuptools, no test suites, headers or Cython sources,
# and none of pyarrow's Flight (RPC) and S3 libraries, which embrel never loads
# (pyarrow.fs skips S3 when its module is absent). The import check fails the build
# if anything embrel needs went with them.
RUN set -eu; \
    site=$(/opt/embrel/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
    /opt/embrel/bin/python -m pip uninstall -q -y pip setuptools wheel; \
    find "$site" -depth -type d \( -name __pycache__ -o -name tests \) -exec rm -rf {} +; \
    find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete; \
    rm -rf "$site"/pyarrow/include "$site"/pyarrow/src "$site"/numpy/_core/include \
        "$site"/pyarrow/libarrow_flight.so* "$site"/pyarrow/libarrow_python_flight.so* \
        "$site"/pyarrow/_flight.*.so "$site"/pyarrow/libarrow_s3.so* "$site"/pyarrow/_s3fs.*.so \
        "$site"/pyarrow/_pyarrow_cpp_tests.*.so "$site"/kubernetes/aio; \
    /opt/embrel/bin/python -B -c 'import controller.cli, controller.kube, controller.milvus, pyarrow.parquet, pyarrow.dataset, pyarrow.fs, matplotlib.pyplot, milvus_lite'

FROM ${BASE_IMAGE}
ARG VERSION=unknown
ARG EXTRAS=""
LABEL org.opencontainers.image.title="embrel" \
      org.opencontainers.image.description="Blue/green releases of embeddings in Milvus" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      dev.embrel.extras="${EXTRAS}"
COPY --from=build /opt/embrel /opt/embrel
# `embrel demo --workdir /tmp/demo --examples /opt/embrel/examples/demo`
COPY examples/demo/generate.py /opt/embrel/examples/demo/generate.py
COPY examples/demo/releases /opt/embrel/examples/demo/releases
# HOME, XDG caches and matplotlib's config on /tmp; the embedder loads its model from an
# installed package, never from a hub.
ENV PATH=/opt/embrel/bin:$PATH \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HUB_OFFLINE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["embrel"]
CMD ["--help"]
