"""Fitting the content head (issue 25): once the model is trained, teach the head to place each known item, from
its content alone, where the model puts it by id. New items then get the head's vector (item_tower.py).

Fitted after training, not beside it: the target then stands still (during training the full vectors move every
step, and a head trained on them chased the early epochs' positions), and every known item takes part, not only a
batch's positives. On the small world a head trained beside the model ranked the twin of a user's favourite item
(the same title, category and seller) 142nd of 800; fitted after, it is in the top 50 (tests/service/test_items.py).

The loss is the mean (1 - cosine) to the full vector, the best of four measured for new items (BENCHMARKS.md,
"New items"). The fit runs a fixed number of steps with a decaying rate, not until held-out items stop improving:
- on the small world no held-out figure (cosine, centred cosine, rank of the item's own vector) rose and fell
  with how well held-out items were ranked for users;
- a catalogue whose vectors sit close together (mean cosine 0.97 there) needs the fit's last digits. After 1,000
  steps the mean cosine was 0.9965 but the most popular item's only 0.984, and its twin ranked 114th; after 3,000
  they were 0.9994 and 0.9994 (about 4 ms a step for 800 items on this machine);
- stopping where the held-out cosine peaked (10% of the known items, then a refit on all for that many steps)
  chose 50-100 steps and was tried on both benchmarks: on MovieLens-100K it placed new items about as well
  (Recall@50 0.07-0.10 against 0.06-0.07), on the synthetic world worse (text 0.2525 against 0.2909, below the
  category's popularity), and the twin above fell to 218th.
Weighting items by their events placed every new item near the popular ones: they took a third of each list.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from training.item_tower import ItemTower


def fit_content_head(tower: ItemTower, seed: int, steps: int = 3000, batch_size: int = 4096, lr: float = 1e-2,
                     weight_decay: float = 1e-4, show_progress: bool = True) -> dict:
    """Fit `tower.content_head` by the mean (1 - cosine) between each known item's content vector and its full
    vector, in `steps` AdamW steps of `batch_size` items with a cosine-decayed rate; nothing else changes.
    Returns what the fit reached, for the run's record."""
    known = torch.nonzero(tower.item_seen > 0).squeeze(1)
    known = known[known > 0]  # code 0 pads
    if len(known) == 0:
        return {"known_items": 0, "steps": 0, "cosine": None}
    was_training = tower.training
    tower.eval()  # the full vectors: the tower as it serves
    with torch.no_grad():
        targets = torch.cat([tower(known[start:start + batch_size]) for start in range(0, len(known), batch_size)])
    head = tower.content_head
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    generator = torch.Generator().manual_seed(seed)
    order, position = torch.randperm(len(known), generator=generator), 0
    bar = tqdm(range(steps), desc="content head", disable=None if show_progress else True, leave=False)
    for _ in bar:
        if position >= len(known):  # a new pass over the catalogue, in a new order
            order, position = torch.randperm(len(known), generator=generator), 0
        rows = order[position:position + batch_size].to(known.device)
        position += batch_size
        loss = (1.0 - (tower.content_vectors(known[rows]) * targets[rows]).sum(-1)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(cosine=f"{1 - loss.item():.4f}")
    bar.close()
    tower.content_head_fitted.fill_(1)
    tower.train(was_training)
    with torch.no_grad():
        cosine = torch.cat([(tower.content_vectors(known[start:start + batch_size])
                             * targets[start:start + batch_size]).sum(-1)
                            for start in range(0, len(known), batch_size)]).mean()
    return {"known_items": len(known), "steps": steps, "cosine": round(float(cosine), 4)}
