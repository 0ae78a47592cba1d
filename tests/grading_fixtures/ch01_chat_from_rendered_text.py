"""The template rendered as text and encoded in one go: the marker names become ordinary text tokens
(encoding never produces a special token), so the model never sees a real marker."""

EXPECT_FAIL = {"encode_chat_ids", "encode_chat_mask", "encode_chat_turns_and_generation_prompt",
               "encode_chat_marker_text_stays_text"}


def encode_chat(tok, messages, add_generation_prompt=False):
    ids, mask = [tok.bos_id], [False]
    for message in messages:
        head = tok.encode(f"<|{message['role']}|>")
        body = tok.encode(message["content"] + "<|end|>")
        ids += head + body
        mask += [False] * len(head) + [message["role"] == "assistant"] * len(body)
    if add_generation_prompt:
        head = tok.encode("<|assistant|>")
        ids += head
        mask += [False] * len(head)
    return ids, mask
