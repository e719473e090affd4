from lkdevice.rtc.errors import RpcError, TokenRejected, redact_tokens
from lkdevice.host_tools.tokens import mint_token


def test_token_rejected_never_repeats_the_token():
    token = mint_token("devkey", "secret", identity="d", room="r")
    err = TokenRejected(401, f"invalid token: {token}, error: token is expired (exp)")
    assert token not in str(err) and token.split(".")[1] not in err.reason
    assert "token is expired" in str(err) and err.status == 401


def test_redaction_leaves_ordinary_text_alone():
    assert redact_tokens("room not found: kitchen") == "room not found: kitchen"


def test_rpc_error_carries_code_message_and_data():
    err = RpcError(RpcError.RESPONSE_TIMEOUT, "response timed out", "x")
    assert (err.code, err.message, err.data) == (1502, "response timed out", "x")
    assert "1502" in str(err)
