"""The chosen NLL summed over each response instead of per token: long answers dominate the term, and
alpha means something different for every data set."""
EXPECT_FAIL = {"dpo_nll_loss_matches_reference", "dpo_nll_loss_is_per_token"}


def dpo_nll_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_tokens, beta=0.1, alpha=0.2):
    nll = (-policy_chosen).mean()
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) + alpha * nll  # noqa: F821
