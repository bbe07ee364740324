import pytest

from braintumor import locations, s3


@pytest.mark.parametrize("text", ["s3:/bucket/key", "S3://bucket/key", "s3:bucket", "S3:/x"])
def test_mistyped_uri_rejected(text):
    with pytest.raises(ValueError, match="not a valid S3 URI"):
        s3.is_s3(text)


@pytest.mark.parametrize("text, expected", [("s3://b/k", True), ("/data/s3/k", False), ("outputs", False), ("./s3:/x", False)])
def test_is_s3(text, expected):
    assert s3.is_s3(text) is expected


def test_parse_drops_leading_slashes():
    assert s3.S3Uri.parse("s3://bucket//scored//") == s3.S3Uri("bucket", "scored//")
    assert locations.join("s3://bucket//scored//", "labels.csv") == "s3://bucket/scored/labels.csv"


@pytest.mark.parametrize("text", ["s3://", "s3:///key"])
def test_parse_without_bucket(text):
    with pytest.raises(ValueError, match="no bucket name"):
        s3.S3Uri.parse(text)


def test_invalid_endpoint_named(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "notaurl")

    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL_S3") as raised:
        s3.client()

    assert "notaurl" in str(raised.value)
