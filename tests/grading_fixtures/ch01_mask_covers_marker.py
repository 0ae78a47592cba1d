"""The <|assistant|> marker counted as part of the answer: the model would be trained to predict a
token the template always supplies."""

EXPECT_FAIL = {"encode_chat_mask", "encode_chat_turns_and_generation_prompt"}


def encode_chat(tok, messages, add_generation_prompt=False):
    ids, mask = [tok.bos_id], [False]
    for message in messages:
        turn = [tok.role_id(message["role"]), *tok.encode(message["content"]), tok.end_id]
        ids += turn
        mask += [message["role"] == "assistant"] * len(turn)
    if add_generation_prompt:
        ids.append(tok.role_id("assistant"))
        mask.append(False)
    return ids, mask
