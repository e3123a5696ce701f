# tgllm in a container (docs/deploy-container.md).
#
#   docker build -t tgllm .
#   docker run -d --name tgllm --restart unless-stopped --stop-timeout 15 \
#       --env-file tgllm.env -v tgllm-data:/data tgllm
#
# Stage 1 builds on Debian 12 with the same packages as scripts/setup;
# stage 2 is a slim Debian 12 with only the runtime libraries, running as an
# unprivileged user, the SQLite history on the /data volume.

FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential cmake pkg-config \
        libevent-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev libmd4c-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DTGLLM_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target tgllm \
 && strip /build/tgllm \
 && /build/tgllm --version

FROM debian:12-slim
# The shared libraries tgllm links (libevent core/openssl, libcurl with
# OpenSSL, jansson, SQLite, md4c, libpq) and the CA certificates for HTTPS.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        ca-certificates libevent-core-2.1-7 libevent-openssl-2.1-7 \
        libcurl4 libssl3 libjansson4 libsqlite3-0 libmd4c0 libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home --shell /usr/sbin/nologin tgllm \
 && install -d -o tgllm -g tgllm -m 0700 /data
COPY --from=build /build/tgllm /usr/local/bin/tgllm
# Fails the build if a runtime library is missing.
RUN tgllm --version

USER tgllm:tgllm
WORKDIR /data
VOLUME ["/data"]
ENV STORE=sqlite:/data/tgllm.db
# tgllm serve listens here (PORT); tgllm poll needs no port.
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tgllm"]
CMD ["poll"]
