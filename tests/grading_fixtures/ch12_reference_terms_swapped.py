"""Each policy log-probability compared with the reference's of the OTHER response: the loss no longer
starts at log 2 and rewards the reference's own preference between the two answers."""
import torch.nn.functional as F

EXPECT_FAIL = {"dpo_loss_matches_reference", "dpo_loss_is_log_2_at_the_start", "dpo_loss_stable_for_large_margins"}


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):
    chosen_reward = beta * (policy_chosen - ref_rejected)
    rejected_reward = beta * (policy_rejected - ref_chosen)
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()
