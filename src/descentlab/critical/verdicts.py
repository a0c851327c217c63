"""Why the loss stopped going down: a verdict from the evidence measured at a stall.

The lectures' question has more answers than "the gradient is zero", and a practitioner's run
has more causes than the lectures'. Each verdict below comes from evidence a
:class:`~descentlab.critical.StallMonitor` measures at the plateau, held as plain data (numbers,
strings, booleans in nested dicts: JSON as it is), names the layer(s) it concerns where it has
any, and comes with one remedy. **The precedence table** (a verdict is given only when none above
it applies; the first eleven need no Hessian, so they are decided before any is computed):

====  =========================  ========================================================  =================================
 #    verdict                    evidence                                                  remedy
====  =========================  ========================================================  =================================
 1    ``diverged``               the loss became non-finite; sharpness at the last good    the largest stable rate there
                                 point
 2    ``no_learning_rate``       the rate is 0, or at most 1e-3 of the largest it has      fix the schedule (or give the
                                 been; or no weight moved between two checks though lr x   optimizer the model's weights;
                                 the relative gradient is >= 1e-4 (Adam's kind: lr over    where it holds them, its step
                                 the weights' root-mean-square; an optimizer that steps    after backward; rounded away:
                                 none of the model's weights, or never steps); or, in      float32 weights, a larger
                                 half precision, >= half the weights with a gradient       rate; climbing:
                                 stood still (their steps round away); or the steps climb  ``maximize=False``, or
                                 the loss: ``maximize=True`` and the loss above where it   backpropagate the loss, not
                                 began (after row 13, at a stable rate: the loop's         its negative; nothing to try)
                                 gradient at cosine <= -0.5 to the loss's, the loss >= 2x
                                 where it began: ``-loss`` backpropagated)
 3    ``accumulating_gradient``  the gradient the optimizer stepped with is >= 4x the      zero the gradients before each
                                 norm a fresh batch gradient has here (its noise           backward (``zero_grad()``)
                                 included) and grew >= 10x since the run began: gradients
                                 summed over past steps
 4    ``biased_batches``         the loop's batch losses >= 5x below the tracked loss on   draw each step's batch from the
                                 the data, against their ratio at the first checks; the    whole data, shuffled
                                 tracked loss >= 0.1 of where it began: the batches are    (``DataLoader(shuffle=True)``)
                                 not a sample of the data (a class order, one batch
                                 repeated); or a ``DataLoader`` read in order whose first
                                 batch's classes are >= 0.5 (total variation) from a
                                 random sample's: the data sorted by class
 5    ``weight_decay``           the optimizer's weight decay pulls the weights at least   lower the weight decay (the
                                 half as hard as the loss's gradient, each through the     optimizer's ``weight_decay``)
                                 optimizer's own steps (``critical.decay``), and the
                                 loss stuck high: held where the decay balances the loss
 6    ``exploding_gradient``     the relative gradient grows >= 100x from the output       clip the gradients, a lower rate,
                                 layer to the input, steadily, and the gradient norm grew  warm-up, re-initialise
                                 or the loss rose; or, in a recurrent network, the
                                 gradient grew >= 100x during the run and the loss rose
                                 (through time)
 7    ``bounded_outputs``        a sigmoid, tanh or softmax makes the model's outputs, and  take the bounded function off the
                                 the floor that bound puts under the loss holds >= 80 %    outputs (cross-entropy takes raw
                                 of what is left to learn (with hard labels: the loss      scores)
                                 within 1.25x of it; ``critical.output_floor``:
                                 cross-entropy, binary cross-entropy with logits, squared
                                 error); a ReLU (or hardtanh) at the outputs: its floor
                                 with the outputs it holds at its bound, where it passes
                                 no gradient, kept there
 8    ``dead_units``             a ReLU layer with at least half its units zero on every   LeakyReLU, re-initialise, a lower
                                 sample of the monitor's sample; the loss stuck high. Not  rate
                                 a layer whose live units vary over the samples by <= 1/30
                                 of their size (blind: a signal that faded below, row 10)
 9    ``saturated_units``        a sigmoid/tanh layer with at least half its units in      standardize the inputs,
                                 their flat tails on most samples; the loss stuck high     re-initialise, ReLU/GELU
10    ``vanishing_gradient``     the relative gradient falls >= 100x from the output       Adam, re-initialise with the
                                 layer to the input, steadily, over >= 3 weight layers;    right gain, ReLU/GELU
                                 stuck high
11    ``unscaled_inputs``        input spreads spanning >= 100x or far from unit scale,    standardize the inputs (or the
                                 and standardizing them lowers the inputs' condition       targets)
                                 number >= 1,000x (their factor of the first layer's
                                 Hessian); or, stuck high, regression targets >= 30 in
                                 root-mean-square and >= 100x the outputs'. Inputs that    (inputs that do not vary:
                                 do not vary over the sample, or unscaled with a typical   check how they are loaded;
                                 spread <= 1/30, come before rows 8-10: the units see      nothing to try)
                                 their biases alone, each the same on every sample.
                                 Targets at which the loss has no lowest value (binary     (targets without a floor:
                                 cross-entropy's outside [0, 1]) come before rows 2-10:    map them into [0, 1];
                                 the loss falls without end. Under squared error, stuck    nothing to try; a few far
                                 high, a few targets (<= 1 %) 30 or more robust spreads    out: look at them, a log
                                 from the median holding >= half the squared error come    scale or a robust loss;
                                 before rows 8-10                                          nothing to try)
12    ``symmetric_units``        a weight layer with at least half its units copies of     re-initialise the layer (random
                                 another (rows equal to 1e-6: set equal, they get equal    weights), or gradient noise
                                 gradients and stay equal); stuck high; not a saddle or
                                 a maximum
13    ``unstable``               sharpness at or past the optimizer's stability limit      a rate below limit/λ_max, or
                                 (``critical.stability``); not a critical point. Or        warm-up; for ringing momentum
                                 momentum that rings: an oscillation's half-life >= 50     a lower momentum (0.9); for a
                                 steps (β >= 0.973, Adam's β₁ too), the loss >= 10 %       raised rate, the best's rate;
                                 above its best, not critical. Or a rate raised >= 2x      momentum >= 1: the momentum 0.9
                                 since the loss's best, the loss >= 3x that best. Or a
                                 ``momentum`` option >= 1 (:func:`runaway_momentum`),
                                 decided before rows 3-12: no rate is stable
14    ``saddle``                 critical, and negative curvature that matters: over the   step along the negative-curvature
                                 escape's longest step r, ½|λ_min| r² at least the         eigenvector; where the weight
                                 gradient's ‖∇L‖ r (a saddle by the signs alone, whose     decay holds it
                                 curvature gains less, goes on down the table)             (:func:`held_by_decay`), lower
                                                                                           the decay
15    ``maximum``                critical, all curvature negative                          any step downhill
16    ``noise_floor``            mini-batch training and the full-data gradient smaller    decay the rate, or a larger batch
                                 than the mini-batch noise (SNR < 1, ``critical.noise``);
                                 the loss has come down from where it began (no run
                                 starts at its floor); under SGD or heavy ball, the
                                 noise holds the loss >= 1 % above where the rate would
                                 settle without it, (η_eff / 4) tr Σ_B
17    ``minimum``                critical, no negative curvature; the loss near the best   stop (or a larger model), or
                                 seen, or stuck high (above half the initial loss). Or     restart / noise / a larger
                                 flat at a loss of 0 (:func:`at_zero`): every sample the   model; with under 10 % of the
                                 loss counts is fitted                                     parameters training, more; at
                                                                                           0, what the loss counts
18    ``flat``                   critical, gradient and spectrum ≈ 0, the loss flat        a fresh output layer, a larger
                                 around, not at 0                                          rate, momentum, or noise
19    ``slow``                   none of the above: not critical, stable, not noise-bound  a larger rate or momentum (Adam
                                                                                           whose eps swamps √v̂: a lower
                                                                                           eps; a kinked loss, whose
                                                                                           curvature along one step is
                                                                                           >= 3x the Hessian's: decay
                                                                                           the rate)
20    ``mixed_samples``          the samples of a batch are not kept apart, the loss       keep each sample apart (a
                                 stuck high: the model's outputs for half a batch change   layer built with
                                 by > 1e-3 of their size without the other half (eval      ``batch_first=False`` named);
                                 mode: a recurrent or attention layer without              one shape for the outputs and
                                 batch_first fed (batch, time, ...), a softmax over dim    the targets; nothing to try
                                 0), or the loss's gradient at the outputs moves where the
                                 targets stayed >= 0.5x as much as where half of them
                                 moved (outputs (N, 1) broadcast against targets (N,)).
                                 Tried after row 1, before row 2
====  =========================  ========================================================  =================================

Why this order: a non-finite loss or a rate of zero explains any plateau, and so does an optimizer
stepping with the sum of every gradient since the start (a loop without ``zero_grad``: its steps are
as long as those of a rate that grows each step, whatever the loss's own gradient is, and a growing
loop gradient would read as an exploding one); so do batches that are not a sample of the data (what
the loop fits is not what the loss measures: weights fitted to one class die, a point fitted to one
batch is sharp); so does a weight decay that pulls the weights as hard as the loss does (it holds
them at the origin of a network, which reads as a saddle, or where the pull balances the loss: a
slow run whose larger rate would only shrink the weights faster under AdamW). A cause in the network
itself (gradients that explode or vanish through the depth, outputs a bounded function holds above
the loss's floor, units that pass no gradient, inputs on the wrong scale) comes next: it makes the
curvature, the noise and the sharpness what they are (a tanh network fed inputs 200x too large is
saturated, and its sharpness past the limit is a symptom; its remedy is the inputs' scale, not the
rate). Among them a floor under the loss comes first: measured, it says how low the loss can go at
all, and a sigmoid at the output that holds the loss there saturates on its own, which is not the
hidden layers' fault; and inputs that barely vary come before the units, which see their biases
alone and read as dead or saturated for that (a unit alive on every sample is as blind to them as a
dead one); so do a few targets far out under squared error, whose errors are the loss and whose
gradient steps throw the units dead. A loss with no lowest value at its targets (labels -1/+1 given
to binary cross-entropy) is named before anything but a non-finite loss: it falls without end, so
every plateau, gradient and alarm along it is that fall's; so are samples a batch does not keep
apart (``mixed_samples``, with the loss stuck high: a model whose output for one sample depends on
the others in its batch, a loss that compares every output with every target), which cap what any
model or remedy of the loop can fit. Units that are copies of each other (a constant initialisation)
get equal gradients and stay copies at any rate, so they come before the rate, except at a saddle or
a maximum (a point where a layer's units are all equal and the gradient vanishes, the origin of a
two-layer net, is a saddle: the escape breaks their symmetry). Then the lectures' order: a rate past
the stability limit keeps the iterate from settling whatever the point is, and so does momentum near
1 at any rate below it (its oscillations damp as √β a step: a loss that gave back what it had
learned under it is read as unstable before the rows below), and so does a rate raised since the
loss's best that threw the loss up and holds it there (where it landed, the sharpness may be within
the limit: no row below explains the rise); a saddle or a maximum is escaped by a step, whatever the
noise; the noise floor is tested before calling a point a minimum, because SGD at a constant rate
hovers *around* a minimum at a loss above it.
``slow`` is what is left. A verdict needs only the evidence it reads: without the optimizer
(``rate`` missing) no rate verdict is given, without the batch size no noise verdict, without
activation modules (activations written as functions) no dead or saturated units.

Evidence keys (each a dict, ``None`` when not measured): ``loss`` (``value``, ``best``,
``initial``), ``gradient`` (``norm``, ``tolerance``, ``critical``, ``growth``), ``curvature``
(``kind`` from :mod:`descentlab.critical.rules`, ``min_eigenvalue``, ``max_eigenvalue``,
``degenerate``, ``decided_by``, ``dtype``, ``eig_tol``), ``rate`` (``lr``, ``peak_lr``,
``zero_since``, ``total_steps``, ``rule``, ``formula``, ``limit``, ``sharpness``, ``ratio``,
``largest_stable_lr``), ``noise`` (from :meth:`~descentlab.critical.noise.NoiseEstimate.to_dict`),
``layers`` (from :meth:`~descentlab.critical.layer_signals.LayerSignals.to_dict`: the weight
layers' relative gradients and updates, the activation sites' dead and saturated shares, the input
scales, the outputs' bound and the loss's floor), ``batches`` (``batch_loss``, ``tracked``,
``first_ratio``, ``ratio``: :meth:`~descentlab.critical.history.RunHistory.batch_record`),
``decay`` (``decay``, ``decoupled``, ``pull``: :func:`~descentlab.critical.decay.decay_pull`),
``diverged`` (``step``, ``checkpoint_step``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from descentlab.critical.output_floor import output_range
from descentlab.critical.stability import ring_half_life

__all__ = ["VERDICTS", "CAUSES", "NETWORK_CAUSES", "LASTING", "EXPLAIN_A_RISE", "REMEDIES", "decide",
           "decide_without_curvature",
           "remedy", "stuck_high", "bounded", "FLOOR_HELD", "decay_bound", "DECAY_PULL", "biased", "BATCH_RATIO",
           "BATCH_LOSS_FLOOR", "near_best", "unmoved",
           "weights_still", "rounded_away", "ROUNDED_MOST", "maximizing", "climbing", "climbs",
           "runaway_momentum", "CLIMB_COSINE", "CLIMB_RISE", "at_zero", "ZERO_LOSS", "in_class_order",
           "ORDER_DISTANCE", "non_finite_data",
           "eps_bound", "EPS_BOUND",
           "accumulating", "raised", "RATE_RAISED", "THROWN_UP", "FROZEN_BELOW", "HELD_MOST",
           "network_cause", "off_scale", "unscaled", "blank", "constant_inputs", "unscaled_targets",
           "floorless_targets", "outlying_targets", "OUTLYING_MOST", "unpaired", "UNPAIRED", "samples_shape", "quoted",
           "warming", "kinked", "KINKED", "KINK_STEP",
           "targets_not_inputs", "mostly_frozen",
           "TARGET_RATIO", "held_by_decay", "LR_ZERO",
           "AT_LIMIT", "NOISE_SNR", "NOISE_SHARE", "noise_excess", "noise_holds", "SADDLE_REACH", "shallow",
           "STUCK_HIGH", "NEAR_BEST", "BARELY_MOVED", "barely_moved",
           "DEAD_SHARE", "BLIND_VARIATION", "blind_units", "SATURATED_SHARE", "DEPTH_ORDERS", "STEADY", "GROWTH",
           "GROWTH_THROUGH_TIME", "INPUT_SPAN", "mixed", "MIXED",
           "INPUT_SCALE", "INPUT_CONDITION", "STILL_STEP", "SYMMETRIC_SHARE", "copied", "ACCUMULATED",
           "ACCUMULATED_GROWTH", "SHRUNK", "shrunk", "ringing", "RING_STEPS"]

#: Every verdict, in the table's rows (tried in their order, but row 20, tried after row 1).
VERDICTS = ("diverged", "no_learning_rate", "accumulating_gradient", "biased_batches", "weight_decay",
            "exploding_gradient",
            "bounded_outputs", "dead_units", "saturated_units", "vanishing_gradient", "unscaled_inputs",
            "symmetric_units", "unstable", "saddle", "maximum", "noise_floor", "minimum", "flat", "slow",
            "mixed_samples")
#: The verdicts decided without the Hessian (rows 1-11 and 20 of the table).
CAUSES = VERDICTS[:11] + ("mixed_samples",)
#: The causes in the network or its inputs (rows 6-11): :func:`network_cause` decides them.
NETWORK_CAUSES = VERDICTS[5:11]
#: The causes that stay until the run is changed (rows 2-12 and 20): one is told once, not at each plateau.
LASTING = VERDICTS[1:12] + ("mixed_samples",)
#: The verdicts that explain a loss thrown up with its gradient (an alarm, not a plateau): the causes
#: and a rate past its limit. The others (a noise floor, a saddle, a slow pace...) describe where a
#: loss stopped, and a rise on a loss that was surely falling is no such place.
EXPLAIN_A_RISE = CAUSES + ("unstable",)

#: The remedy of each verdict in one sentence (with the numbers filled in by :func:`remedy`).
REMEDIES = {
    "no_learning_rate": "fix the schedule: the rate is ~0, so no step can move the loss",
    "accumulating_gradient": "zero the gradients before each backward (optimizer.zero_grad()): the optimizer "
                             "steps with the sum of every gradient since the start",
    "unstable": "lower the rate below the largest stable rate, or warm it up",
    "saddle": "step along the negative-curvature eigenvector (a line search keeps the loss from rising)",
    "maximum": "take any step downhill",
    "noise_floor": "decay the rate, or use a larger batch",
    "minimum": "stop here, or restart / add noise / use a larger model to go lower",
    "flat": "re-initialise the output layer (an output held past a bound or saturated passes no gradient), "
            "or use a larger rate, momentum, or noise to cross the flat region",
    "slow": "raise the rate toward the largest stable rate, or add momentum",
    "diverged": "restart with a rate below the largest stable rate at the last good point",
    "exploding_gradient": "clip the gradients, lower the rate or warm it up, or re-initialise the layers",
    "dead_units": "use LeakyReLU, re-initialise the dead layers, or lower the rate",
    "saturated_units": "standardize the inputs, re-initialise the layers, or use ReLU/GELU",
    "vanishing_gradient": "use Adam, re-initialise with the activation's gain, or ReLU/GELU for sigmoid/tanh",
    "unscaled_inputs": "standardize the inputs",
    "biased_batches": "draw each step's batch from the whole data, shuffled: the loop fits batches that are not a "
                      "sample of the data",
    "weight_decay": "lower the optimizer's weight decay: it holds the weights where its pull balances the loss",
    "bounded_outputs": "take the sigmoid / tanh / softmax / ReLU off the model's outputs: the loss expects raw "
                       "scores, and the bound puts a floor under it",
    "symmetric_units": "re-initialise the layer whose units are copies of each other with random weights "
                       "(equal units get equal gradients and stay equal), or add gradient noise",
    "mixed_samples": "keep the samples of a batch apart, in the model and in the loss: each output from its own "
                     "sample, compared with its own target",
}

#: The rate is ~0 when it is at most this fraction of the largest rate the run has used.
LR_ZERO = 1e-3
#: A non-critical point whose sharpness is at least this fraction of the limit is at the limit.
AT_LIMIT = 0.9
#: Below this gradient signal-to-noise ratio the mini-batch noise dominates.
NOISE_SNR = 1.0
#: A saddle's negative curvature matters where it gains at least this many times what the gradient
#: does over the escape's longest step (:func:`shallow`).
SADDLE_REACH = 1.0
#: ... and at a noise floor the noise holds the loss up by at least this share of it (:func:`noise_holds`).
NOISE_SHARE = 0.01
#: A minimum whose loss is above this fraction of the initial loss is stuck high.
STUCK_HIGH = 0.5
#: A loss within this relative distance of the best loss seen is near the best.
NEAR_BEST = 0.01
#: The loop's gradient against the loss's (their cosine at most this) with the loss this many times
#: where it began: the steps climb the loss (:func:`climbing`).
CLIMB_COSINE = -0.5
CLIMB_RISE = 2.0
#: A loss this share of where it began, or below, is 0 as measured (:func:`at_zero`).
ZERO_LOSS = 1e-9
#: A loss within this relative distance of where the run began has barely moved: a ``slow`` or
#: ``noise_floor`` verdict there says what it cannot tell apart from batches without the data's signal.
BARELY_MOVED = 0.05
#: No weight moved though the rate times a layer's relative gradient is at least this (a thousand
#: times float32's resolution: no rounding swallows such a step).
STILL_STEP = 1e-4
#: Accumulating gradients: the smallest gradient the loop stepped with since the last check is at
#: least this many times the root-mean-square norm a fresh batch gradient has at the weights
#: (sqrt(|g|² + tr Σ_B), the batch noise included; the smallest of ten fresh ones is below it) ...
ACCUMULATED = 4.0
#: ... and this many times the smallest of the run's first check: a sum of noisy gradients grows
#: only as the square root of the steps, so the ratio above is kept low and the growth says the rest.
ACCUMULATED_GROWTH = 10.0
#: The largest gradient the loop stepped with since the last check at most this fraction of a fresh
#: batch gradient's norm: clipped far below it, or a loss scaled down (said in ``slow``'s remedy).
SHRUNK = 0.1
#: A minimum stuck high with under this share of the model's parameters training (``requires_grad``):
#: the minimum of those few, and the remedy says so (a healthy head-only fine-tune is not stuck high).
FROZEN_BELOW = 0.1
#: A model in half precision whose entries with a gradient stood still at least this share of them
#: over the last interval: its steps round away (``precision.still``; float32 moves them all).
ROUNDED_MOST = 0.5
#: Adam's eps at least √v̂ on this share of the coordinates: its denominator is eps, and it steps as
#: momentum SGD at lr/eps (``rate.eps_bound``, :func:`~descentlab.critical.stability.eps_bound_share`).
EPS_BOUND = 0.5
#: No weight moved though the optimizer steps at least this share of the model's trainable parameters
#: (``rate.held``): the loop never steps with a gradient (``no_learning_rate``'s remedy says the order).
HELD_MOST = 0.5
#: A rate at least this many times the rate at the loss's best ...
RATE_RAISED = 2.0
#: ... with the loss at least this many times that best: the rise threw the loss up (``unstable``).
THROWN_UP = 3.0
#: Momentum rings when an oscillation's half-life under it (:func:`~descentlab.critical.stability.ring_half_life`)
#: is at least this many steps, a window of the monitor's plateau test (β >= 0.973; 0.9 halves one in 13 steps,
#: 0.99 in 138, 0.999 in 1,386).
RING_STEPS = 50.0
#: Symmetric units: a weight layer with at least this share of its units copies of another.
SYMMETRIC_SHARE = 0.5
#: Dead units: a ReLU activation with at least this share of its units zero on every sample.
DEAD_SHARE = 0.5
#: ... unless its units are blind: those alive vary over the samples by at most this share of their
#: root-mean-square (median; ``UnitStats.variation``), so each is its bias alone, on or off alike for
#: every sample, and half of them off says nothing of the units (a 20-layer ReLU MLP at PyTorch's
#: default initialisation: 0.8 at the first layer, 0.005 at the first half-dead one, 7e-8 at the last;
#: the same MLP Kaiming-initialised trains). The same 1/30 as the inputs' :func:`blank`.
BLIND_VARIATION = 1 / 30
#: Saturated units: a sigmoid/tanh activation with at least this share of its units in the flat tails.
SATURATED_SHARE = 0.5
#: Vanishing / exploding: the relative gradient changes at least 10**this from the output layer to the input ...
DEPTH_ORDERS = 2.0
#: ... steadily: the least-squares trend through every layer covers at least this share of that change.
STEADY = 0.75
#: Exploding: the gradient norm grew at least this much over the monitor's recent checks.
GROWTH = 10.0
#: ... and in a recurrent network (a layer applied through time) this much, with the loss rising,
#: is an explosion through time (which a depth profile cannot show).
GROWTH_THROUGH_TIME = 100.0
#: Biased batches: the loop's batch loss over the tracked loss at most this share of its first ratio ...
BATCH_RATIO = 0.2
#: ... with the tracked loss at least this share of where it began (near 0, a ratio of small numbers is noise).
BATCH_LOSS_FLOOR = 0.1
#: ... or a loader read in order whose first batch's class shares are at least this far (total
#: variation) from a random sample's: 1 for a batch of one class; a random batch of 64 of 10
#: classes is 0.1-0.3 away by chance.
ORDER_DISTANCE = 0.5
#: Weight decay: its step on the weights at least this share of the loss's gradient step (healthy runs
#: with the usual decays: 0.002-0.34 on README's loops; decays that hold the loss at chance: 0.9-3.2).
DECAY_PULL = 0.5
#: Bounded outputs: the bound forbids at least this share of what is left to learn,
#: ``(floor - free) / (loss - free)`` (with hard labels, ``free = 0``: the loss within 1.25x of its floor).
FLOOR_HELD = 0.8
#: Unscaled inputs: feature spreads spanning at least this factor ...
INPUT_SPAN = 100.0
#: ... or a typical spread (or mean over spread) beyond this factor from 1 ...
INPUT_SCALE = 30.0
#: Regression targets this many times the model's outputs (root-mean-square), themselves
#: :data:`INPUT_SCALE` or more from unit scale: in raw units (house prices ~2e5 against outputs ~0.3).
TARGET_RATIO = 100.0
#: ... and standardizing them lowers the condition number of their second moment at least this much.
INPUT_CONDITION = 1e3
#: "A few" regression targets far out is at most this share of them (:func:`outlying_targets`).
OUTLYING_MOST = 0.01
#: A loss whose gradient at the outputs changes, where the targets stayed, by at least this share of
#: its change where they moved does not pair outputs with targets (:func:`unpaired`; a broadcast,
#: outputs (N, 1) against targets (N,): 1.00 for squared error, 1.05 for L1; losses that pair,
#: cross-entropy, squared error, BCE, sequence cross-entropy: 0 exactly; a class-weighted mean, whose
#: denominator reads every target: a small share).
UNPAIRED = 0.5
#: A model whose outputs for the second half of a batch change by more than this share when the first
#: half is not there mixes the samples (:func:`mixed`; in eval mode: a model that keeps samples apart
#: reads 0 to rounding, an LSTM, a GRU or torch's transformer layer without ``batch_first`` fed
#: batch-first data 0.03-0.11, a log-softmax over dim 0 0.17).
MIXED = 1e-3
#: A loss is kinked at the rate's scale where the curvature one plain step meets (the secant, from
#: the gradient one step away) is at least this many times the Hessian's along it (the tangent) ...
KINKED = 3.0
#: ... and that excess is at least this share: over one step, the gradient along it changes by that
#: much of itself beyond what the Hessian says (``excess``; for plain SGD the curvatures' difference
#: times the rate; L1 on a ReLU MLP: 0.43-0.47; smooth losses ~0, the secant within 0.91-1.04x of the
#: tangent, :mod:`descentlab.critical.kink`).
KINK_STEP = 0.05


def quoted(names: Sequence[str]) -> str:
    """Names quoted, the first four and how many more: ``'0', '2', '4', '6' and 13 more``."""
    shown = ", ".join(repr(n) for n in names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def samples_shape(shape: Sequence[int]) -> str:
    """The shape of ``N`` samples of one sample's ``shape``: ``(N, 1)`` for ``(1,)``, ``(N,)`` for ``()``."""
    return f"({', '.join(['N', *(str(n) for n in shape)])}{',' if not shape else ''})"


def _get(evidence: Mapping[str, Any], section: str, key: str, default: Any = None) -> Any:
    part = evidence.get(section) or {}
    value = part.get(key, default)
    return default if value is None else value


def decide(evidence: Mapping[str, Any]) -> str:
    """The verdict (one of :data:`VERDICTS`) the evidence supports, tried in the table's order."""
    early = decide_without_curvature(evidence)
    if early is not None:
        return early
    critical = bool(_get(evidence, "gradient", "critical", False))
    kind = _get(evidence, "curvature", "kind")
    if stuck_high(evidence) and copied(evidence) and not (critical and kind in ("saddle", "local_max")):
        return "symmetric_units"
    ratio = _get(evidence, "rate", "ratio")
    if ratio is not None and math.isfinite(ratio) and (ratio >= 1.0 or (ratio >= AT_LIMIT and not critical)):
        return "unstable"
    if not critical and ringing(evidence):
        return "unstable"
    if raised(evidence):
        return "unstable"
    if climbing(evidence):  # read after the rate test: steps past their limit throw the gradient's sign too
        return "no_learning_rate"
    if critical and kind == "saddle" and not shallow(evidence):
        return "saddle"
    if critical and kind == "local_max":
        return "maximum"
    snr = _get(evidence, "noise", "snr")
    if snr is not None and snr < NOISE_SNR and not unmoved(evidence) and noise_holds(evidence):
        return "noise_floor"
    if critical and (kind == "local_min" or kind == "flat" and at_zero(evidence)):
        return "minimum"
    if critical and kind == "flat":
        return "flat"
    return "slow"


def decide_without_curvature(evidence: Mapping[str, Any]) -> str | None:
    """A verdict of rows 1-11 of the table (:data:`CAUSES`) where the evidence has one, else ``None``:
    what can be said before any Hessian is computed."""
    if evidence.get("diverged"):
        return "diverged"
    if floorless_targets(evidence):  # a loss that falls without end explains any plateau and any alarm
        return "unscaled_inputs"
    if stuck_high(evidence) and (unpaired(evidence) or mixed(evidence)):  # whatever else is wrong, it caps the fit
        return "mixed_samples"
    lr, peak = _get(evidence, "rate", "lr"), _get(evidence, "rate", "peak_lr")
    if lr is not None and (lr == 0 or (peak and lr <= LR_ZERO * peak) or weights_still(evidence)
                           or rounded_away(evidence) or maximizing(evidence)):
        return "no_learning_rate"
    if runaway_momentum(evidence):
        return "unstable"
    if accumulating(evidence):
        return "accumulating_gradient"
    if biased(evidence):
        return "biased_batches"
    if decay_bound(evidence):
        return "weight_decay"
    return network_cause(evidence)


def accumulating(evidence: Mapping[str, Any]) -> bool:
    """The loop's gradient is :data:`ACCUMULATED` times the norm a fresh batch gradient has at
    these weights and grew :data:`ACCUMULATED_GROWTH` times since the run began
    (``gradient.loop_ratio`` and ``loop_growth``): what the optimizer steps with is not this
    loss's gradient but a sum over past steps. Each alone has other causes: a loss summed where
    the monitor's is averaged is a constant ratio from the first step; an exploding gradient
    grows, but so does the fresh one."""
    ratio, growth = _get(evidence, "gradient", "loop_ratio"), _get(evidence, "gradient", "loop_growth")
    return ratio is not None and growth is not None and ratio >= ACCUMULATED and growth >= ACCUMULATED_GROWTH


def biased(evidence: Mapping[str, Any]) -> bool:
    """The loop's batches have a loss at most :data:`BATCH_RATIO` of the tracked loss on the data,
    against their ratio at the first checks (``batches.ratio``), below any loss the data ever had
    (``loss.best``), and the tracked loss is still at least :data:`BATCH_LOSS_FLOOR` of where it
    began: the loop fits batches that are not a sample of the data (the data in class order, one
    batch repeated), and the data's loss stays where those batches leave it. (A loss thrown up
    by a rate too high leaves its batches behind too, the data's loss measured after the steps
    they were read before, but those batches are far above the data's best.) With batch-norm in
    training mode the ratio also holds against the data's loss as training computes it, on the
    batch's statistics (``batches.tracked_batch_statistics``): the tracked loss reads the running
    statistics, which lag the batches' early on. And where the data's losses are so uneven that a
    fair interval of batches reads that low too (``batches.fair_low``, the least of its resampled
    means against the data's: :func:`~descentlab.critical.diagnosis.fair_low`), they are not biased."""
    batches = evidence.get("batches") or {}
    if in_class_order(batches):
        return True
    ratio, batch_loss = batches.get("ratio"), batches.get("batch_loss")
    value, initial, best = (_get(evidence, "loss", key) for key in ("value", "initial", "best"))
    trained, first, fair = batches.get("tracked_batch_statistics"), batches.get("first_ratio"), batches.get("fair_low")
    return bool(ratio is not None and math.isfinite(ratio) and ratio <= BATCH_RATIO and value is not None
                and (fair is None or ratio <= fair)
                and initial and value >= BATCH_LOSS_FLOOR * initial
                and (best is None or batch_loss is None or batch_loss < best)
                and (trained is None or not first or batch_loss / trained <= BATCH_RATIO * first))


def in_class_order(batches: Mapping[str, Any] | None) -> bool:
    """The loop's ``DataLoader`` reads the data in its order (``shuffle=False``) and its first batch's
    classes are :data:`ORDER_DISTANCE` or more (total variation) from a random sample's
    (``batches.order``, :func:`~descentlab.critical.sample.order_evidence`): the data is sorted by
    class, so each run of batches is one class, fitted at the others' expense (with momentum, every
    new class's batch is missed: their loss sits above the data's, which a fall of the batches'
    ratio never shows)."""
    distance = ((batches or {}).get("order") or {}).get("distance")
    return distance is not None and distance >= ORDER_DISTANCE


def decay_bound(evidence: Mapping[str, Any]) -> bool:
    """The optimizer's weight decay pulls the weights at least :data:`DECAY_PULL` as hard as the
    loss's gradient (``decay.pull``, :func:`~descentlab.critical.decay.decay_pull`) and the loss is
    stuck high: the run sits where the decay balances the loss (or at the origin it drags the
    weights to), which no rate, noise or curvature explains."""
    pull = (evidence.get("decay") or {}).get("pull")
    return pull is not None and math.isfinite(pull) and pull >= DECAY_PULL and stuck_high(evidence)


def copied(evidence: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The weight layers with at least :data:`SYMMETRIC_SHARE` of their units copies of another
    (``layers.layers[i].copies``), input first."""
    layers = (evidence.get("layers") or {}).get("layers") or []
    return [layer for layer in layers if (layer.get("copies") or 0.0) >= SYMMETRIC_SHARE]


def held_by_decay(evidence: Mapping[str, Any]) -> bool:
    """At a saddle, the optimizer's weight decay curves the function it descends up along the
    escape direction at least as much as the loss curves down (``curvature.decayed_escape`` not
    negative): the run is held there, and a step along that direction is pulled back."""
    held = _get(evidence, "curvature", "decayed_escape")
    return held is not None and math.isfinite(held) and held >= 0


def ringing(evidence: Mapping[str, Any]) -> bool:
    """The optimizer's momentum (``rate.momentum``) rings, an oscillation's half-life at least
    :data:`RING_STEPS`, and the loss is 10 % or more above its best: below its stability limit,
    momentum near 1 still carries the iterate across the valley and back for hundreds of steps
    at any rate, and the loss gives back what it had learned."""
    momentum = _get(evidence, "rate", "momentum")
    return bool(momentum is not None and 0.0 <= momentum <= 1.0 and ring_half_life(momentum) >= RING_STEPS
                and _loss_rising(evidence))


def raised(evidence: Mapping[str, Any]) -> bool:
    """The rate is :data:`RATE_RAISED` times the rate at the loss's best (``loss.best_lr``) or more,
    and the loss :data:`THROWN_UP` times that best or more: the rise threw the loss up to where the
    larger rate holds it, though the sharpness there is within the limit (a catapult flattens the
    region it lands in), so no pace verdict says it."""
    lr, best_lr = _get(evidence, "rate", "lr"), _get(evidence, "loss", "best_lr")
    value, best = _get(evidence, "loss", "value"), _get(evidence, "loss", "best")
    return bool(lr is not None and best_lr and lr >= RATE_RAISED * best_lr and value is not None
                and best is not None and best > 0 and value >= THROWN_UP * best)


def shrunk(evidence: Mapping[str, Any]) -> bool:
    """Even the largest gradient the loop stepped with since the last check is at most
    :data:`SHRUNK` of the norm a fresh batch gradient has here (``gradient.loop_high_ratio``): the
    optimizer's steps are that much shorter than the rate says (gradients clipped far below their
    norm, a loss scaled down before ``backward``)."""
    ratio = _get(evidence, "gradient", "loop_high_ratio")
    return ratio is not None and ratio <= SHRUNK


def weights_still(evidence: Mapping[str, Any]) -> bool:
    """No weight layer moved between the last two checks (every relative update exactly 0) though
    some layer's step, relative to its weights, would be at least :data:`STILL_STEP`, a step no
    rounding can swallow: the rate times its relative gradient, or for an optimizer whose steps
    move each coordinate by about the rate (``rate.per_coordinate``: Adam's kind) the rate over its
    weights' root-mean-square. Whatever the rate says, no step reaches these weights (an optimizer
    given none of this model's parameters, its step taken after the gradients were zeroed). A
    gradient of ~0 (a maximum, dead units, a flat region) or a rate so small its steps round away
    moves nothing either, for other reasons. (Adam at 1e-3 on a digits MLP whose gradients were
    zeroed before each step: 1e-3 times the relative gradient is 9e-5, its own first step 0.01.)"""
    layers = (evidence.get("layers") or {}).get("layers") or []
    lr = _get(evidence, "rate", "lr") or 0.0
    if _get(evidence, "rate", "per_coordinate"):
        steps = [lr * math.sqrt(layer.get("size") or 0) / layer["weight_norm"] for layer in layers
                 if (layer.get("weight_norm") or 0) > 0]
    else:
        steps = [lr * layer["relative"] for layer in layers if math.isfinite(layer.get("relative") or math.nan)]
    return (bool(layers) and all(layer.get("update") == 0.0 for layer in layers)
            and max(steps, default=0.0) >= STILL_STEP)


def runaway_momentum(evidence: Mapping[str, Any]) -> bool:
    """The optimizer's momentum option is 1 or more (``rate.momentum_option``; torch accepts it):
    the velocity grows by that factor a step wherever the gradient is 0, so no rate is stable, and
    whatever the network shows (units killed by the steps) follows from it."""
    momentum = _get(evidence, "rate", "momentum_option")
    return momentum is not None and momentum >= 1.0


def maximizing(evidence: Mapping[str, Any]) -> bool:
    """The optimizer steps up the gradient (``maximize=True``: ``rate.maximize``) and the loss is
    above where it began: it climbs the loss the monitor is told to lower."""
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    return bool(_get(evidence, "rate", "maximize") and value is not None and initial is not None and value > initial)


def climbing(evidence: Mapping[str, Any]) -> bool:
    """The gradient the loop stepped with points against the loss's own here (``gradient.loop_cosine``
    at most :data:`CLIMB_COSINE`) and the loss rose to :data:`CLIMB_RISE` times where it began, at a
    rate its sharpness calls stable (measured: the rule is read after the rate test): each step
    climbs the loss, as a loop that backpropagates ``-loss`` does. (Past the limit a step overshoots:
    the loss rises too, and the gradient's sign flips between the two points. Within it the loss
    does not rise twofold.)"""
    cosine = _get(evidence, "gradient", "loop_cosine")
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    return bool(cosine is not None and cosine <= CLIMB_COSINE and value is not None and initial and initial > 0
                and value >= CLIMB_RISE * initial and _get(evidence, "rate", "ratio") is not None)


def rounded_away(evidence: Mapping[str, Any]) -> bool:
    """The model holds its weights in half precision and at least :data:`ROUNDED_MOST` of the
    entries with a gradient stood still over the last interval (``precision.still``): the steps
    are below half the spacing of the numbers around the weights and round away, which a rate
    as such does not explain (in float32 the same steps move every one)."""
    still = _get(evidence, "precision", "still")
    return still is not None and still >= ROUNDED_MOST


def eps_bound(evidence: Mapping[str, Any]) -> bool:
    """Adam's eps is at least √v̂ on :data:`EPS_BOUND` of the coordinates (``rate.eps_bound``):
    its per-coordinate scaling is gone, and its steps are momentum SGD's at lr/eps."""
    share = _get(evidence, "rate", "eps_bound")
    return share is not None and share >= EPS_BOUND


def non_finite_data(evidence: Mapping[str, Any]) -> int:
    """How many samples of the data a divergence was examined on hold a NaN or an infinity in
    their inputs or targets (0 where none, or not counted): a loss made non-finite by its data,
    which no rate, restart or rollback fixes."""
    return int(((evidence.get("data") or {}).get("non_finite") or {}).get("samples") or 0)


def network_cause(evidence: Mapping[str, Any]) -> str | None:
    """Rows 6-11: a cause in the network or its inputs (``None``: none the evidence shows)."""
    layers = evidence.get("layers") or {}
    stuck = stuck_high(evidence)
    drop, trend = layers.get("depth_drop"), layers.get("depth_trend")
    steadily = drop is not None and trend is not None and drop * trend > 0 and trend / drop >= STEADY
    growth = _get(evidence, "gradient", "growth") or 0.0
    rising = _loss_rising(evidence)
    if drop is not None and drop <= -DEPTH_ORDERS and steadily and (rising or growth >= GROWTH):
        return "exploding_gradient"
    peak = _get(evidence, "gradient", "peak_growth") or 0.0
    if layers.get("recurrent") and rising and max(growth, peak) >= GROWTH_THROUGH_TIME:
        return "exploding_gradient"  # through time: the loop's gradient grew while the loss rose
    if bounded(evidence):
        return "bounded_outputs"
    if blank(layers.get("inputs")):  # units that cannot see the inputs read as dead or saturated
        return "unscaled_inputs"
    if stuck and outlying_targets(layers.get("targets")):  # their errors' gradients throw the units dead
        return "unscaled_inputs"
    units = layers.get("units") or []
    if stuck and any((u.get("dead") or 0) >= DEAD_SHARE and not blind_units(u) for u in units):
        return "dead_units"
    if stuck and any((u.get("saturated") or 0) >= SATURATED_SHARE for u in units):
        return "saturated_units"
    if stuck and drop is not None and drop >= DEPTH_ORDERS and steadily:
        return "vanishing_gradient"
    if unscaled(layers.get("inputs")) or stuck and unscaled_targets(layers.get("targets")):
        return "unscaled_inputs"
    return None


def blind_units(units: Mapping[str, Any]) -> bool:
    """An activation site whose live units barely tell the samples apart (``variation`` at most
    :data:`BLIND_VARIATION`): a signal that faded in the layers below leaves each unit its bias,
    so the share of them dead is a symptom of the fade (row 10, its gradient fading with it), not
    of the units."""
    variation = units.get("variation")
    return variation is not None and variation <= BLIND_VARIATION


def bounded(evidence: Mapping[str, Any]) -> bool:
    """A bound built into the model's outputs puts a floor under the loss that holds at least
    :data:`FLOOR_HELD` of what is left to learn (``layers.outputs.held``): the loss cannot go much
    lower whatever the optimizer does (:mod:`~descentlab.critical.output_floor`)."""
    held = ((evidence.get("layers") or {}).get("outputs") or {}).get("held")
    return held is not None and math.isfinite(held) and held >= FLOOR_HELD


def off_scale(inputs: Mapping[str, Any] | None) -> bool:
    """Input spreads spanning :data:`INPUT_SPAN` or more, or a typical spread (or a mean over its
    spread) beyond :data:`INPUT_SCALE` from 1."""
    if not inputs:
        return False
    typical = inputs.get("std_median") or 1.0
    return bool((inputs.get("span") or 1.0) >= INPUT_SPAN or not 1 / INPUT_SCALE <= typical <= INPUT_SCALE
                or (inputs.get("mean_max") or 0) >= INPUT_SCALE)


def unscaled(inputs: Mapping[str, Any] | None) -> bool:
    """Inputs :func:`off_scale` whose standardizing would round their second moment (its
    condition number :data:`INPUT_CONDITION` times smaller)."""
    if not off_scale(inputs):
        return False
    raw, standardized = inputs.get("cond_raw"), inputs.get("cond_standardized")
    if raw is None or standardized is None or not standardized > 0:
        return False
    return bool(raw / standardized >= INPUT_CONDITION if math.isfinite(raw) else math.isfinite(standardized))


def blank(inputs: Mapping[str, Any] | None) -> bool:
    """Inputs that tell the samples apart too little for the units to: no feature varies over the
    sample (``inputs.features`` 0), or they are :func:`unscaled` with a typical spread of
    1/:data:`INPUT_SCALE` or less. A first layer fed them sees its biases alone, so each unit is
    the same on every sample, dead or alive, saturated or not; a dead or saturated share says
    nothing of the units then (row 11 comes before rows 8-10 for these inputs)."""
    if not inputs:
        return False
    return inputs.get("features") == 0 or unscaled(inputs) and (inputs.get("std_median") or 1.0) <= 1 / INPUT_SCALE


def constant_inputs(evidence: Mapping[str, Any]) -> bool:
    """No input feature varies over the sample (``layers.inputs.features`` 0): the :func:`blank`
    inputs that no change to the training loop can help."""
    return ((evidence.get("layers") or {}).get("inputs") or {}).get("features") == 0


def unscaled_targets(targets: Mapping[str, Any] | None) -> bool:
    """Regression targets whose root-mean-square is :data:`INPUT_SCALE` or more and
    :data:`TARGET_RATIO` times the model's outputs' or more: the last layer is asked for weights
    and a bias that many times their scale, which steps sized for its initial weights take
    forever to reach (a relative gradient test then reads the huge loss as a critical point)."""
    if not targets:
        return False
    return bool(targets["rms"] >= INPUT_SCALE and targets["ratio"] >= TARGET_RATIO)


def outlying_targets(targets: Mapping[str, Any] | None) -> bool:
    """Under squared error, a few regression targets, at most :data:`OUTLYING_MOST` of them, far
    out (``layers.targets.outlying``: 30 robust spreads or more from the median) and holding at
    least half the squared deviations (``outlying_error``): what the loss measures, and what its
    gradient pulls toward, is those few (a sentinel such as -999 for a missing value, a unit slip,
    or a tail so heavy that squared error sees nothing else)."""
    if not targets:
        return False
    share = targets.get("outlying") or 0.0
    return bool(0 < share <= OUTLYING_MOST and (targets.get("outlying_error") or 0.0) >= 0.5)


def floorless_targets(evidence: Mapping[str, Any]) -> float:
    """The share of the targets at which the loss has no lowest value (``layers.targets.without_floor``:
    binary cross-entropy's targets outside [0, 1]); 0 where none is, or the targets were not read."""
    return float((((evidence.get("layers") or {}).get("targets") or {}).get("without_floor")) or 0.0)


def unpaired(evidence: Mapping[str, Any]) -> bool:
    """The loss does not compare each output with its own target (``layers.pairing.leak`` at least
    :data:`UNPAIRED`: :func:`~descentlab.critical.pairing.target_pairing`): outputs (N, 1) broadcast
    against targets (N,) compare every output with every target, so the best any model can do is
    the targets' mean, and the loss stops at their spread."""
    leak = (((evidence.get("layers") or {}).get("pairing")) or {}).get("leak")
    return leak is not None and leak >= UNPAIRED


def mixed(evidence: Mapping[str, Any]) -> bool:
    """The model does not keep the samples of a batch apart (``layers.mixing.change`` above
    :data:`MIXED`: :func:`~descentlab.critical.mixing.sample_mixing`): a sample's output depends on
    the others in its batch (a recurrence or attention along the batch, a softmax over it)."""
    change = (((evidence.get("layers") or {}).get("mixing")) or {}).get("change")
    return change is not None and change > MIXED


def targets_not_inputs(evidence: Mapping[str, Any]) -> bool:
    """The data's scale that :func:`network_cause` names is the regression targets' alone: they are
    :func:`unscaled_targets` and the inputs are not :func:`unscaled`."""
    layers = evidence.get("layers") or {}
    return unscaled_targets(layers.get("targets")) and not unscaled(layers.get("inputs"))


def mostly_frozen(evidence: Mapping[str, Any]) -> bool:
    """The loss is stuck high with under :data:`FROZEN_BELOW` of the model's parameters training
    (``data.trainable`` of ``data.parameters``): a minimum of those few (a layer frozen by mistake)."""
    trainable, total = _get(evidence, "data", "trainable"), _get(evidence, "data", "parameters")
    return bool(stuck_high(evidence) and trainable is not None and total and trainable < FROZEN_BELOW * total)


def _loss_rising(evidence: Mapping[str, Any]) -> bool:
    """The tracked loss is at least 10 % above the best it has been."""
    value, best = _get(evidence, "loss", "value"), _get(evidence, "loss", "best")
    return bool(value is not None and best is not None and value > best + 0.1 * max(abs(best), 1e-12))


def remedy(verdict: str, evidence: Mapping[str, Any]) -> str:
    """The remedy of ``verdict`` in one sentence, with the evidence's numbers where they help."""
    if verdict not in REMEDIES:
        raise ValueError(f"unknown verdict {verdict!r}; valid: {', '.join(VERDICTS)}")
    largest = _get(evidence, "rate", "largest_stable_lr")
    lr, peak = _get(evidence, "rate", "lr"), _get(evidence, "rate", "peak_lr")
    if verdict == "no_learning_rate" and rounded_away(evidence) and lr:
        precision = evidence["precision"]
        return (f"keep the weights in float32 (autocast the forward to {precision['dtype']} instead of converting "
                f"the model), or raise the rate: {precision['still']:.0%} of the weights with a gradient did not "
                f"move in the last {precision['steps']} steps at rate {lr:.3g}, their steps below half the spacing "
                f"of {precision['dtype']} numbers around them (rounded away)")
    if climbs(verdict, evidence):
        return climbing_remedy(verdict, evidence)
    if verdict == "no_learning_rate" and weights_still(evidence) and lr:
        held = _get(evidence, "rate", "held")
        if held is not None and held >= HELD_MOST:
            return (f"take the optimizer's step after each backward (zero_grad, forward, backward, then step): it "
                    f"holds {held:.0%} of this model's parameters, yet at rate {lr:.3g} no weight moved between the "
                    "last two checks (step() not called, or called with the gradients zeroed: zero_grad between "
                    "backward and step, or step before backward)")
        return (f"give the optimizer this model's parameters: at rate {lr:.3g} no weight moved between the last "
                "two checks, so no step reaches them" + (f" (it holds {held:.0%} of them)" if held is not None else ""))
    if verdict == "accumulating_gradient":
        return (f"zero the gradients before each backward (optimizer.zero_grad()): the optimizer stepped with a "
                f"gradient {_get(evidence, 'gradient', 'loop_ratio', math.nan):.3g}x a fresh batch's here, the sum "
                "of the gradients of past steps")
    if verdict == "biased_batches" and in_class_order(evidence.get("batches")):
        order = evidence["batches"]["order"]
        return (f"shuffle the data (DataLoader(shuffle=True)): the loader reads it in order, and its first batch "
                f"holds {order['first_batch_classes']} of the {order['sample_classes']} classes a random sample has "
                f"(their shares {order['distance']:.2f} apart, total variation): the data is sorted by class, and "
                "the loop fits one class after another")
    if verdict == "biased_batches" and evidence.get("batches"):
        batches = evidence["batches"]
        return (f"draw each step's batch from the whole data, shuffled (DataLoader(shuffle=True); a new batch every "
                f"step): the loop's batches had a loss of {batches['batch_loss']:.3g} where the data's is "
                f"{batches['tracked']:.3g}, {1 / batches['ratio']:.3g}x lower than their ratio at the start (the data "
                "in class order, or one batch repeated, is fitted and the rest is not)")
    if verdict == "weight_decay" and evidence.get("decay"):
        decay, value, initial = evidence["decay"], _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
        kind = "decoupled (AdamW's)" if decay.get("decoupled") else "coupled"
        where = (f", so the loss stays at {value:.3g} ({value / initial:.0%} of where it began)"
                 if value and initial else "")
        return (f"lower the weight decay (the optimizer's weight_decay, in your code; 100x lower is a start): its "
                f"{kind} pull at {decay['decay']:g} is {decay['pull']:.2g}x the loss's gradient step on the "
                f"weights{where}; a larger rate does not help")
    if verdict == "no_learning_rate":
        since, total = _get(evidence, "rate", "zero_since"), _get(evidence, "rate", "total_steps")
        when = f" since step {since}" if since is not None else ""
        if total is not None:
            when += f" of {total}"
        return (f"fix the schedule so the rate lasts until the last step: it has been {lr:.3g}{when}"
                + (f" (its peak was {peak:.3g})" if peak else "")
                + (", and a negative rate climbs the loss" if lr < 0 else ", and no step can move the loss"))
    ratio = _get(evidence, "rate", "ratio")
    if verdict in ("unstable", "diverged") and runaway_momentum(evidence):
        momentum = _get(evidence, "rate", "momentum_option")
        return (f"lower the momentum below 1 (0.9 is usual): at {momentum:g} heavy ball keeps "
                + ("all" if momentum == 1 else f"{momentum:g}x") + " of its velocity each step wherever the gradient "
                "is 0, so no rate is stable and a lower one only delays the blow-up")
    if verdict == "unstable" and ringing(evidence) and (ratio is None or ratio < 1.0):
        momentum = _get(evidence, "rate", "momentum")
        return (f"lower the momentum to 0.9: at {momentum:g} an oscillation halves only every "
                f"{ring_half_life(momentum):,.0f} steps (at 0.9 every {ring_half_life(0.9):.0f}), whatever the rate"
                + (f"; the rate is within its limit ({ratio:.2g} of it)" if ratio is not None else ""))
    if verdict == "unstable" and raised(evidence) and (ratio is None or ratio < 1.0):
        best_lr, best = _get(evidence, "loss", "best_lr"), _get(evidence, "loss", "best")
        value = _get(evidence, "loss", "value")
        return (f"lower the rate back toward {best_lr:.3g}, where the loss was at its best ({best:.3g}): at "
                f"{lr:.3g} it sits at {value:.3g}, {value / best:.0f}x that best, though the sharpness here is "
                "within the limit")
    if verdict == "unstable" and largest:
        if _get(evidence, "rate", "converged") is False:  # a lower bound of the sharpness: an upper one of the rate
            return (f"lower the rate well below {largest:.3g} (at most the largest stable rate here: the budget "
                    "ended the sharpness' measurement at a lower bound already past the limit), or warm it up")
        return f"lower the rate below {largest:.3g} (the largest stable rate here), or warm it up"
    if verdict == "diverged" and non_finite_data(evidence):
        counted, good = _get(evidence, "data", "non_finite"), _get(evidence, "diverged", "checkpoint_step")
        return (f"repair the data: {counted['samples']:,} of the {counted['of']:,} samples in {counted['where']} "
                f"{'holds' if counted['samples'] == 1 else 'hold'} a NaN or an infinity, and one in a batch makes the "
                "loss and every weight non-finite at any rate (drop those rows, or torch.nan_to_num); then restart"
                + (f" from the last good point (step {good})" if good is not None else ""))
    if verdict in ("unscaled_inputs", "diverged") and floorless_targets(evidence):
        return (f"map the targets into [0, 1] ((y + 1) / 2 for labels -1 and +1): binary cross-entropy has no "
                f"lowest value at a target outside [0, 1] ({floorless_targets(evidence):.0%} of them here), so the "
                "loss falls without end and the scores and weights grow with it; no change to the training loop "
                "can help")
    if verdict == "mixed_samples" and unpaired(evidence):
        pairing = evidence["layers"]["pairing"]
        outputs, targets = samples_shape(pairing["outputs"]), samples_shape(pairing["targets"])
        how = (f"give both one shape ({outputs} against {targets} broadcast: model(x).squeeze(-1), or y[:, None])"
               if outputs != targets else f"the loss reshapes one of them ({outputs} both) so that they broadcast")
        return (f"make the loss compare each output with its own target: moving half the samples' targets moves "
                f"its gradient at the other half {pairing['leak']:.2g}x as much, so it compares every output with "
                f"every target and no model can do better than their mean; {how}; no change to the training loop "
                "can help")
    if verdict == "mixed_samples" and mixed(evidence):
        mixing = evidence["layers"]["mixing"]
        off = mixing.get("batch_first_off") or []
        where = (f"{quoted(off)} {'was' if len(off) == 1 else 'were'} built with batch_first=False, so a recurrent or "
                 "attention layer fed (batch, time, ...) runs along the batch: build it with batch_first=True"
                 if off else "look for a recurrent or attention layer without batch_first=True, or a softmax, "
                 "normalization or view over dim 0 in the forward pass; no change to the training loop can help")
        return (f"keep the samples of a batch apart: the model's outputs for half a batch change by "
                f"{mixing['change']:.2g} of their size when the other half is not there (eval mode), so each "
                f"sample's output depends on its neighbours'; {where}")
    if verdict in ("unscaled_inputs", "diverged") and outlying_targets(_get(evidence, "layers", "targets")):
        targets = evidence["layers"]["targets"]
        return (f"look at the targets: {targets['outlying']:.2%} of them lie 30 or more robust spreads from their "
                f"median and hold {targets['outlying_error']:.0%} of the squared error, so the loss and its gradient "
                "are theirs; if they are errors (a sentinel such as -999 for a missing value, a unit slip), fix or "
                "drop them; if they are real, train on a log scale or with a robust loss (F.huber_loss)")
    if verdict == "diverged":
        good = _get(evidence, "diverged", "checkpoint_step")
        drop, trend = _get(evidence, "layers", "depth_drop"), _get(evidence, "layers", "depth_trend")
        if drop is not None and drop <= -DEPTH_ORDERS and trend is not None and trend / drop >= STEADY:
            return (f"the gradient grew {10 ** -drop:,.0f}x from the output layer to the input at the last good "
                    f"point (an exploding gradient): clip the gradients, re-initialise the layers, or lower the rate"
                    + (f" below {largest:.3g}" if largest else ""))
        if largest and lr and largest < lr:
            where = (f" at step {good}, the last good point" if good is not None
                     else " where it diverged: no finite loss was read before")
            return f"restart with a rate below {largest:.3g} (the largest stable rate{where})"
        if good is None or _get(evidence, "rate", "sharpness") is None:
            before = ("no finite loss was read before it diverged" if good is None
                      else f"the last good point, step {good}, gave no finite sharpness")
            return (f"restart with a smaller rate or clipped gradients, and check the data and the loss for values "
                    f"that overflow (a log of 0, a division by 0, extreme inputs): {before}, so whether the rate "
                    "was past its limit is not known")
        return ("the rate was stable at the last good point: restart from it with a smaller rate or clipped "
                "gradients, and check the data and the loss for values that overflow (a log of 0, extreme inputs)")
    if verdict == "noise_floor":
        critical_batch = _get(evidence, "noise", "critical_batch")
        batch = _get(evidence, "noise", "batch_size")
        if critical_batch and batch and critical_batch > batch:
            return (f"decay the rate, or use a larger batch (above {critical_batch:.0f}, where the gradient's SNR "
                    "reaches 1)" + _signal_unseen(evidence))
        return REMEDIES[verdict] + _signal_unseen(evidence)
    if verdict == "saddle" and held_by_decay(evidence):
        decay, lowest = _get(evidence, "curvature", "decay"), _get(evidence, "curvature", "min_eigenvalue")
        return (f"lower the weight decay below {abs(lowest):.3g} (the optimizer's weight_decay, in your code): at "
                f"{decay:.3g} it curves the objective up along the escape direction more than the loss curves down "
                f"({lowest:.3g}), so the decay holds the run at this saddle and an escape step is pulled back")
    if verdict == "minimum":
        value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
        trainable, total = _get(evidence, "data", "trainable"), _get(evidence, "data", "parameters")
        if mostly_frozen(evidence):
            return (f"train more of the model: only {trainable:,} of its {total:,} parameters have requires_grad, "
                    f"and this minimum of theirs keeps {value / initial:.0%} of the initial loss (a layer frozen "
                    "by mistake, or left out of the optimizer?)")
        if stuck_high(evidence):
            return (f"restart from another seed, add noise, or use a larger model: this minimum keeps "
                    f"{value / initial:.0%} of the initial loss")
        if at_zero(evidence):
            return ("stop here: the loss is 0 on the samples it counts, as low as a loss that is never negative "
                    "goes; if the model still does not do what you want, the loss does not count it (class weights "
                    "of 0, an ignore_index, a mask)")
        return "stop here: no direction lowers the loss (a larger model could go lower)"
    layers = evidence.get("layers") or {}
    if verdict in ("dead_units", "saturated_units"):
        key = "dead" if verdict == "dead_units" else "saturated"
        worst = max((u for u in layers.get("units") or [] if u.get(key) is not None), key=lambda u: u[key], default=None)
        if worst is None:
            return REMEDIES[verdict]
        where = f"{worst[key]:.0%} of the units at {worst['name']!r} ({worst['family']}) are {key}"
        outputs = layers.get("outputs") or {}
        if verdict == "dead_units" and outputs.get("module") and outputs.get("loss") and outputs["by"] == worst["name"]:
            return (f"{where}, and they make the model's outputs: take the {worst['family']} at {worst['name']!r} off "
                    f"them, or use LeakyReLU there: {_RAW.get(outputs['loss'], 'the loss expects unbounded outputs')}")
        if verdict == "dead_units":
            return f"{where}: use LeakyReLU there, re-initialise the layer before it (Kaiming, bias 0), or lower the rate"
        cause = "the inputs are off unit scale: standardize them, or " if off_scale(layers.get("inputs")) else ""
        return f"{where}: {cause}re-initialise the layers (Xavier), or use ReLU/GELU"
    growth = max(_get(evidence, "gradient", "growth") or 0.0, _get(evidence, "gradient", "peak_growth") or 0.0)
    if verdict == "exploding_gradient" and (layers.get("depth_drop") or 0) > -DEPTH_ORDERS and growth:
        return (f"the gradient grew {growth:,.0f}x during the run and the loss rose (through time, in a recurrent "
                f"network): clip the gradients, lower the rate or warm it up, or re-initialise the recurrent weights")
    if verdict in ("vanishing_gradient", "exploding_gradient") and layers.get("layers"):
        first, last = layers["layers"][0], layers["layers"][-1]
        drop = layers.get("depth_drop") or 0.0
        change = (f"falls {10 ** drop:,.0f}x" if verdict == "vanishing_gradient" else f"grows {10 ** -drop:,.0f}x")
        where = f"the relative gradient {change} from {last['name']!r} (output) to {first['name']!r} (input)"
        blind = next((u for u in layers.get("units") or [] if blind_units(u)), None)
        if verdict == "vanishing_gradient" and blind is not None:
            return (f"{where}, and the signal fades with it: from {blind['name']!r} on the units vary over the samples "
                    f"by {blind['variation']:.1g} of their size, each its bias alone: re-initialise every layer with "
                    "the activation's gain (Kaiming for ReLU), or add normalization layers")
        if verdict == "vanishing_gradient":
            if _get(evidence, "rate", "per_coordinate"):  # Adam's kind already: its per-coordinate steps did not do it
                return f"{where}: re-initialise with the activation's gain, or ReLU/GELU for sigmoid/tanh"
            return f"{where}: use Adam, re-initialise with the activation's gain, or ReLU/GELU for sigmoid/tanh"
        return f"{where}: clip the gradients, lower the rate or warm it up, or re-initialise the layers"
    if verdict == "bounded_outputs" and layers.get("outputs"):
        return _unbound(layers["outputs"])
    if verdict == "unscaled_inputs" and targets_not_inputs(evidence):
        targets = layers["targets"]
        return (f"standardize the targets: train on (y - {targets['mean']:.3g}) / {targets['std']:.3g} and scale the "
                f"predictions back (their root-mean-square is {targets['rms']:.3g}, {targets['ratio']:.3g}x the "
                f"outputs' {targets['outputs_rms']:.3g}: the last layer would need weights that many times its "
                "own), or start the output bias at the targets' mean")
    if verdict == "unscaled_inputs" and constant_inputs(evidence):
        inputs = layers["inputs"]
        rare = inputs["rare"] - inputs["constant"]
        which = (f"{inputs['constant']} features constant" if not rare else f"{inputs['constant']} features constant, "
                 f"{rare} on one value but for under 1 % of the samples")
        return (f"check how the inputs are loaded and scaled: none of them varies over the sample ({which}), so the "
                "network gives every sample the same output and can learn no more than the labels' frequencies (an "
                "image read as zeros, a scale that divides by a huge number); no change to the training loop can help")
    if verdict == "unscaled_inputs" and layers.get("inputs"):
        inputs = layers["inputs"]
        return (f"standardize the inputs (spreads from {inputs['std_min']:.3g} to {inputs['std_max']:.3g}; "
                f"the condition number of their second moment {inputs['cond_raw']:.3g} -> "
                f"{inputs['cond_standardized']:.3g} standardized)")
    if verdict == "symmetric_units" and copied(evidence):
        where = ", ".join(f"{layer['copies']:.0%} of the units of {layer['name']!r}" for layer in copied(evidence)[:3])
        return (f"{where} are copies of another unit: re-initialise those layers with random weights (equal units "
                "get equal gradients and stay equal, so the layer acts as one unit), or add gradient noise")
    if verdict == "slow" and eps_bound(evidence) and lr:
        eps = _get(evidence, "rate", "eps")
        return (f"lower Adam's eps (now {eps:.3g}; 1e-8 is the default): it is at least sqrt(v_hat) on "
                f"{_get(evidence, 'rate', 'eps_bound'):.0%} of the coordinates a gradient reached, so the denominator "
                "is eps and Adam "
                f"steps as momentum SGD at lr/eps = {lr / eps:.3g}, its per-coordinate scaling gone"
                + (f"; or raise the rate toward {largest:.3g} (the largest stable rate here)" if largest else ""))
    if verdict == "slow" and shrunk(evidence):
        return (f"the optimizer stepped with a gradient at most {_get(evidence, 'gradient', 'loop_high_ratio'):.2g}x "
                f"a fresh batch's here ({_get(evidence, 'gradient', 'loop_high'):.3g} against "
                f"{_get(evidence, 'gradient', 'expected_norm'):.3g}): raise the gradient clipping's threshold above "
                "that norm (or undo the loss's scale before backward), or raise the rate")
    if verdict == "slow" and lr is None and _get(evidence, "curvature", "largest_stable_lr"):
        curvature = evidence["curvature"]
        return (f"raise the rate toward {curvature['largest_stable_lr']:.3g}, the largest stable for gradient "
                f"descent here (2/lambda_max, lambda_max {curvature['max_eigenvalue']:.3g}; with momentum "
                f"{curvature['momentum']}, {curvature['largest_stable_lr_momentum']:.3g}); give StallMonitor the "
                "optimizer (and the batch size) to have your own rate and the noise tested")
    if verdict == "slow" and lr is None:
        return "give StallMonitor the optimizer (and the batch size) so it can test the rate and the noise"
    if verdict == "slow" and warming(evidence):
        return (f"shorten the warm-up: the schedule is still raising the rate ({_get(evidence, 'rate', 'first_lr'):.3g} "
                f"at the first check, {lr:.3g} now) while the loss barely moves (a warm-up counted in epochs but "
                "stepped every batch lasts that many times longer)"
                + (f"; the largest stable rate here is {largest:.3g}" if largest else ""))
    if verdict == "slow" and kinked(evidence):
        step = evidence["rate"]["step_curvature"]
        return (f"decay the rate: the Hessian does not see this loss's curvature, so the largest stable rate it gives"
                + (f" ({largest:.3g})" if largest else "") + " does not hold here: over one step at rate "
                f"{step['lr']:.3g} the gradient changes as a curvature of {step['secant']:.3g} would make it, where "
                f"the Hessian says {step['tangent']:.3g} (a kinked loss, such as L1 or a hinge); at a constant rate "
                "such a loss settles no lower than the rate lets it, and a larger one ends higher")
    if verdict == "slow" and lr and _get(evidence, "rate", "unmodelled"):
        return (f"raise the rate a few times at a time, stepping back where the loss rises: "
                f"{_get(evidence, 'rate', 'unmodelled')} is not modelled, so the largest stable rate of its steps is "
                "not known here" + _unheard(evidence))
    if verdict == "slow" and lr and _get(evidence, "rate", "bounded") is False:
        return ("raise the rate a few times at a time, stepping back where the loss rises: "
                f"{_get(evidence, 'rate', 'rule')}'s accumulator takes in every gradient before it steps (no "
                "coordinate moves more than the rate a step), so the gradients a larger rate brings grow it, and no "
                "limit read at it now bounds the rate"
                + _unheard(evidence))
    if verdict == "slow" and largest and lr and largest > lr:
        return (f"raise the rate toward {largest:.3g} (the largest stable rate here), or add momentum"
                + _unheard(evidence))
    return REMEDIES[verdict] + (_unheard(evidence) if verdict == "slow" else "")


def climbs(verdict: str, evidence: Mapping[str, Any]) -> bool:
    """A ``diverged`` run whose optimizer maximizes or steps at a negative rate (a schedule run past
    its end), or a ``no_learning_rate`` told for climbing."""
    if verdict == "diverged":
        return bool(_get(evidence, "rate", "maximize") or (_get(evidence, "rate", "lr") or 0.0) < 0)
    return verdict == "no_learning_rate" and (maximizing(evidence) or climbing(evidence))


def climbing_remedy(verdict: str, evidence: Mapping[str, Any]) -> str:
    """The remedy of an optimizer that climbs the loss (:func:`maximizing`, :func:`climbing`)."""
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    rose = "to non-finite values" if verdict == "diverged" else f"from {initial:.3g} to {value:.3g}"
    if _get(evidence, "rate", "maximize"):
        return (f"set maximize=False in the optimizer: it steps up the gradient, so the loss rose {rose}; if the "
                "run maximizes an objective on purpose, give the monitor its negative as the loss")
    lr, peak = _get(evidence, "rate", "lr"), _get(evidence, "rate", "peak_lr")
    if verdict == "diverged" and lr is not None and lr < 0:
        return (f"fix the schedule so the rate stays positive until the last step: it is {lr:.3g} here"
                + (f" (its peak was {peak:.3g})" if peak else "") + ", and a negative rate steps up the gradient, "
                f"so the loss rose {rose}")
    return (f"backpropagate the loss itself, not its negative: the gradient the optimizer stepped with points "
            f"against the loss's own here (cosine {_get(evidence, 'gradient', 'loop_cosine'):.2f}), so each step "
            f"climbs it, and the loss rose {rose} at a rate its sharpness calls stable")


def kinked(evidence: Mapping[str, Any]) -> bool:
    """The curvature one step of the optimizer meets is :data:`KINKED` times the Hessian's along it,
    and its excess :data:`KINK_STEP` or more (``rate.step_curvature``): the loss has kinks the
    Hessian does not see (L1, hinge), so the largest stable rate it gives does not hold."""
    step = _get(evidence, "rate", "step_curvature") or {}
    secant, tangent, excess = step.get("secant"), step.get("tangent"), step.get("excess")
    if secant is None or tangent is None or excess is None:
        return False
    return secant >= KINKED * max(tangent, 0.0) and excess >= KINK_STEP


def warming(evidence: Mapping[str, Any]) -> bool:
    """The rate rose at the last check (``rate.rising``) and is above where it was at the run's
    first (``rate.first_lr``): a schedule still raising it, a warm-up under way."""
    lr, first = _get(evidence, "rate", "lr"), _get(evidence, "rate", "first_lr")
    return bool(_get(evidence, "rate", "rising")) and lr is not None and first is not None and lr > first


def _unheard(evidence: Mapping[str, Any]) -> str:
    """What a ``slow`` verdict cannot tell, said where the loss has barely moved from where the run
    began (:func:`barely_moved`) and the batches' gradients are mostly noise: a rate too small reads
    so, and so do batches that carry no signal of the data's (labels drawn apart from the inputs, an
    augmentation that scrambles them), which no rate helps (digits with shuffled labels, SGD 0.1
    momentum 0.9: 2.22 after 400 steps, 2.31 at rate 0.5, 2.43 at 2.5); ``""`` otherwise."""
    snr, batch = _get(evidence, "noise", "snr"), _get(evidence, "noise", "batch_size")
    if snr is None or snr >= NOISE_SNR or not barely_moved(evidence):
        return ""
    return (f"; but the loss is within {BARELY_MOVED:.0%} of where the run began and the batches' gradients are "
            f"mostly noise (SNR {snr:.2g} at batch {batch}): if a larger rate does not lower it, check that the "
            "loop trains on the data's own inputs and labels (labels drawn apart from the inputs, an augmentation "
            "that scrambles them)")


def _signal_unseen(evidence: Mapping[str, Any]) -> str:
    """What a ``noise_floor`` verdict cannot tell where the loss has barely moved from where the run
    began (:func:`barely_moved`): a floor that high is also what batches without the data's signal
    give (labels drawn apart from the inputs), where a larger batch or a smaller rate only slows a
    memorisation; ``""`` otherwise."""
    if not barely_moved(evidence):
        return ""
    return (f"; but the loss is within {BARELY_MOVED:.0%} of where the run began: a floor that high is also what "
            "batches without the data's signal give, so check that the loop trains on the data's own inputs and "
            "labels (labels drawn apart from the inputs, an augmentation that scrambles them)")


#: Why each loss with a floor wants its outputs unbounded.
_RAW = {"cross_entropy": "cross-entropy takes raw scores (it applies the log-softmax itself)",
        "bce_with_logits": "binary cross-entropy with logits applies the sigmoid itself",
        "mse": "the targets reach beyond that range: a linear output reaches them (or scale the targets into it)"}


def _unbound(outputs: Mapping[str, Any]) -> str:
    """``bounded_outputs``' remedy from ``layers.outputs``: which function to take off, and the floor."""
    where = f"at {outputs['by']!r}" if outputs.get("module") else "(in your forward: the rows sum to 1)"
    raw = _RAW.get(outputs["loss"], "the loss expects unbounded outputs")
    if outputs.get("at_bound"):  # flat at its bound: the floor is that of the outputs held there
        return (f"take the {outputs['family']} {where} off the model's outputs: it holds "
                f"{outputs['at_bound']:.0%} of them at its bound, where it passes no gradient, and while they stay "
                f"there the loss cannot go below {outputs['floor']:.3g} (it is {outputs['value']:.3g}); "
                + ("cross-entropy takes raw scores, negative ones too" if outputs["loss"] == "cross_entropy" else raw))
    return (f"take the {outputs['family']} {where} off the model's outputs: it holds them in "
            f"{output_range(outputs)}, where the loss cannot go below {outputs['floor']:.3g} (it is "
            f"{outputs['value']:.3g}); {raw}")


def stuck_high(evidence: Mapping[str, Any]) -> bool:
    """The loss is above :data:`STUCK_HIGH` of the initial loss."""
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    return bool(value is not None and initial and initial > 0 and value > STUCK_HIGH * initial)


def at_zero(evidence: Mapping[str, Any]) -> bool:
    """The loss is 0, or within :data:`ZERO_LOSS` of 0 relative to where it began: the lowest value
    of a loss that is never negative, flat there because every sample it counts is fitted."""
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    return bool(value is not None and (value == 0 or (initial and initial > 0 and 0 <= value <= ZERO_LOSS * initial)))


def unmoved(evidence: Mapping[str, Any]) -> bool:
    """The loss is still where the run began (within :data:`NEAR_BEST`, relative). No run starts
    at its noise floor: SGD's noise holds up a loss its descent brought down, at an excess that
    shrinks with the rate, so a loss that never came down is not held up by noise, however noisy
    the gradient (a rate far too small, an optimizer that steps none of the model's weights)."""
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    return bool(value is not None and initial is not None and initial > 0 and value > (1 - NEAR_BEST) * initial)


def barely_moved(evidence: Mapping[str, Any]) -> bool:
    """The loss is within :data:`BARELY_MOVED` (relative) of where the run began."""
    value, initial = _get(evidence, "loss", "value"), _get(evidence, "loss", "initial")
    return bool(value is not None and initial is not None and initial > 0 and value > (1 - BARELY_MOVED) * initial)


def noise_excess(evidence: Mapping[str, Any]) -> float | None:
    """How far the mini-batch noise holds the loss above where the same rate without noise would
    settle: ``(η_eff / 4) tr Σ_B``. In a quadratic valley SGD's iterate settles with variance
    ``η σ² / (2λ)`` along an eigendirection of curvature λ and noise σ² (for ηλ small), which
    costs ``½λ`` times that, ``η σ² / 4``, whatever λ; summed, ``(η / 4) tr Σ_B`` (Mandt, Hoffman &
    Blei 2017). Heavy ball's variance is ``1 / (1 - β)`` times gradient descent's there
    (``η_eff = lr · scale / (1 - β)``; Nesterov's alike). ``None`` where it is not measured: a
    preconditioned rule (Adam's noise is weighed by its own per-coordinate steps), or no rate
    test or noise estimate."""
    rate = evidence.get("rate") or {}
    noise_sq, rule, lr = _get(evidence, "noise", "noise_sq"), rate.get("rule"), rate.get("lr")
    momentum = rate.get("momentum") or 0.0
    if noise_sq is None or lr is None or rule not in ("gd", "heavy-ball", "nesterov") or rate.get("preconditioned") \
            or momentum >= 1:
        return None
    return lr * (rate.get("scale") or 1.0) / (1.0 - momentum) * noise_sq / 4


def noise_holds(evidence: Mapping[str, Any]) -> bool:
    """The noise holds the loss up by at least :data:`NOISE_SHARE` of it (:func:`noise_excess`;
    ``True`` where that is not measured): an SNR below 1 alone does not make a floor where the
    curvature is so low that the noise costs nothing (a loss crawling along flat directions, whose
    larger rate would help and larger batch not). A loss at or below 0 has no size to hold up: there
    the excess is weighed against the run's fall from where it began, and with no fall to weigh
    against, nothing is held (a weighted cross-entropy at exactly 0 from its first check, every
    sample it counts fitted: a noise of 1e-53 holds up nothing)."""
    excess, value = noise_excess(evidence), _get(evidence, "loss", "value")
    if excess is None or value is None:
        return True
    if value <= 0:
        initial = _get(evidence, "loss", "initial")
        return initial is not None and initial > value and excess >= NOISE_SHARE * (initial - value)
    return excess >= NOISE_SHARE * value


def shallow(evidence: Mapping[str, Any]) -> bool:
    """A saddle by the Hessian's signs whose negative curvature gains less, over the escape's
    longest step, than the gradient still there (``curvature.escape_reach`` below
    :data:`SADDLE_REACH`: :func:`~descentlab.critical.diagnosis.escape_reach`): the escape would
    lower the loss by less than the next steps of descent, so the curvature is not what holds it."""
    reach = _get(evidence, "curvature", "escape_reach")
    return reach is not None and reach < SADDLE_REACH


def near_best(evidence: Mapping[str, Any]) -> bool:
    """The loss is within :data:`NEAR_BEST` (relative) of the best loss seen."""
    value, best = _get(evidence, "loss", "value"), _get(evidence, "loss", "best")
    return bool(value is not None and best is not None and value <= best + NEAR_BEST * max(abs(best), 1e-12))
