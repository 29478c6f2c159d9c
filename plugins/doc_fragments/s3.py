# -*- coding: utf-8 -*-
# Copyright: mlflowops maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The S3 family: accepted by every module of the mlflow action group, used by those that read or write
    # S3 or an S3-compatible store (each module's notes say whether it uses or ignores them).
    DOCUMENTATION = r"""
options:
  endpoint_url:
    description:
      - Address of an S3-compatible endpoint (MinIO, Ceph RGW, moto, ...). Unset means AWS S3.
      - If not set, the value of the E(AWS_ENDPOINT_URL_S3), E(AWS_ENDPOINT_URL) or E(MLFLOW_S3_ENDPOINT_URL)
        environment variable is used.
    type: str
  region:
    description:
      - AWS region of the bucket.
      - If not set, the value of the E(AWS_REGION) or E(AWS_DEFAULT_REGION) environment variable is used.
    type: str
  aws_access_key:
    description:
      - AWS access key id. Must be given together with O(aws_secret_key).
      - If not set, boto3's own chain applies, in order the environment (E(AWS_ACCESS_KEY_ID)), the shared
        credentials file and profile (O(profile), E(AWS_PROFILE)), then instance or container roles.
    type: str
    aliases: [access_key]
  aws_secret_key:
    description:
      - AWS secret access key. Never shown in results or logs.
    type: str
    aliases: [secret_key]
  session_token:
    description:
      - AWS session token for temporary credentials.
    type: str
  profile:
    description:
      - Named profile of the shared AWS config and credentials files.
    type: str
  s3_validate_certs:
    description:
      - Whether to verify the S3 endpoint's TLS certificate.
    type: bool
    default: true
  s3_connect_timeout:
    description:
      - Seconds to wait for a connection to the S3 endpoint.
      - Formerly called C(connect_timeout).
    type: float
    default: 10
  s3_read_timeout:
    description:
      - Seconds to wait for the S3 endpoint to answer on an open connection.
      - Formerly called C(read_timeout).
    type: float
    default: 60
  s3_retries:
    description:
      - How many times to retry a failed request (botocore's standard retry mode) and, on top, a whole
        object transfer that failed on the network or with an HTTP 5xx, with jittered exponential backoff.
      - Formerly called C(retries).
    type: int
    default: 3
  multipart_threshold_mb:
    description:
      - Objects of this many MiB and more go through boto3's managed transfer, in parts
        (multipart upload, ranged download, or C(UploadPartCopy) server-side copy); smaller ones take a single request.
    type: int
    default: 8
  multipart_chunksize_mb:
    description:
      - Part size in MiB of multipart transfers. Also the first part size tried when a local file is
        compared with a multipart ETag.
    type: int
    default: 8
"""
