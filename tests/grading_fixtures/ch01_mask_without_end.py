"""The <|end|> after an answer left out of the mask: the model is never taught to stop."""

EXPECT_FAIL = {"encode_chat_mask", "encode_chat_turns_and_generation_prompt"}


def encode_chat(tok, messages, add_generation_prompt=False):
    ids, mask = [tok.bos_id], [False]
    for message in messages:
        body = tok.encode(message["content"])
        ids += [tok.role_id(message["role"]), *body, tok.end_id]
        mask += [False] + [message["role"] == "assistant"] * len(body) + [False]
    if add_generation_prompt:
        ids.append(tok.role_id("assistant"))
        mask.append(False)
    return ids, mask
