# syntax=docker/dockerfile:1
# One image per podkit binary: docker build --target <binary> -t podkit/<binary>:dev .
# The build stage runs `make build`, so the images hold exactly what `make build` builds.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN make build VERSION=${VERSION}
# The files a static, non-root base needs: CA certificates for TLS outputs and
# a passwd/group naming the nonroot user, as distroless static:nonroot has.
RUN mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
 && chmod 1777 /rootfs/tmp

# A distroless-style static base: no shell, no package manager, user 65532.
FROM scratch AS static-nonroot
COPY --from=build /rootfs/ /
USER 65532:65532

# pause: the pod's infrastructure container, on scratch as 65535 like the Kubernetes pause image.
FROM scratch AS pause
COPY --from=build /src/bin/pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]

FROM static-nonroot AS logsidecar
COPY --from=build /src/bin/logsidecar /logsidecar
EXPOSE 9102
ENTRYPOINT ["/logsidecar"]

FROM static-nonroot AS ambassador
COPY --from=build /src/bin/ambassador /ambassador
EXPOSE 9101
ENTRYPOINT ["/ambassador"]

FROM static-nonroot AS adapter
COPY --from=build /src/bin/adapter /adapter
EXPOSE 9113
ENTRYPOINT ["/adapter"]

FROM static-nonroot AS waitfor
COPY --from=build /src/bin/waitfor /waitfor
ENTRYPOINT ["/waitfor"]
