# The stack's S3: Ceph's RADOS Gateway from Debian bookworm's packages, in one container with a monitor,
# a manager and one OSD whose BlueStore lives in a file on the /var/lib/ceph volume (the pattern of
# ceph-container's demo image). Debian maintains these packages with bookworm's security updates; MinIO
# no longer publishes images (docs/deploy.md, "The S3 server"). The same recipe serves the online path
# (BASE_IMAGE=debian:bookworm) and the air-gapped one (the debootstrap base of docker/offline/bases.sh).
#
# Settings (environment): S3_ACCESS_KEY and S3_SECRET_KEY (required, no default), S3_PORT (9000),
# S3_DISK_GB (the OSD's file, sparse; 8), S3_OSD_MEMORY_MB (the OSD's cache target; 512).
# Health: the S3 user has the environment's key and S3 answers on S3_PORT (an anonymous ListBuckets).
# State: /var/lib/ceph (one volume).
ARG BASE_IMAGE=debian:bookworm
FROM ${BASE_IMAGE}
# Debian's release and its security suite, no exact versions (they vanish with each security update):
# apt-install records what it installed in /usr/share/churnops/packages.txt and prints it.
COPY docker/apt-install.sh /usr/local/sbin/apt-install
RUN apt-install ceph-mon ceph-mgr ceph-osd radosgw ceph-common wget \
 && mkdir -p /var/lib/ceph /etc/ceph /var/log/ceph /var/run/ceph \
 && chown -R ceph:ceph /var/lib/ceph /etc/ceph /var/log/ceph /var/run/ceph
COPY docker/s3/entrypoint.sh /usr/local/bin/s3-entrypoint
USER 64045:64045
ENV S3_PORT=9000 S3_DISK_GB=8 S3_OSD_MEMORY_MB=512
VOLUME ["/var/lib/ceph"]
EXPOSE 9000
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=6 \
  CMD ["sh", "-c", "test -f /var/lib/ceph/run/ready && wget -q -O /dev/null http://127.0.0.1:${S3_PORT}/"]
ENTRYPOINT ["/usr/local/bin/s3-entrypoint"]
