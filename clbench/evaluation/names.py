"""The flat MLflow names a run's figures are logged and compared under, defined once.

The runner writes them, the sweep prints them and the report reads them back; the MLflow UI's columns are these
names. Experience and test-set names are the scenario's own ("CLEVR", "CLEVR-Humans", ...).

Each name says its unit: accuracies and the differences between them (forgetting, BWT, transfer) are fractions,
`_frac` (0.531 is the 53.1 % the terminal prints; a forgetting of 0.021 its 2.1 points), times `_s`, sizes
`_bytes`; ratios (normalised forgetting, flip rates) and counts are plain numbers.
"""

from __future__ import annotations

BWT = "bwt_frac"
AVERAGE_FORGETTING = "average_forgetting_frac"  # mean forgetting over the test sets of every earlier experience
AVERAGE_ACCURACY = "average_accuracy_frac"  # mean accuracy over every test set at the end
WALL_TIME = "wall_time_s"
EPOCHS_TRAINED = "train/epochs_trained"  # stepped by experience, where a plugin (early stopping) ended it early

# What the run cost (clbench.evaluation.cost): training time only (no data building or evaluation), the process's peak
# RSS, CUDA's peak allocation where the run used a GPU, and what the strategy keeps beyond the model.
TRAIN_TIME = "cost/train_time_s"
PEAK_RSS = "cost/peak_rss_bytes"
CUDA_PEAK = "cost/cuda_max_allocated_bytes"
HELD_QUESTIONS = "cost/strategy_questions"
HELD_QUESTION_BYTES = "cost/strategy_question_bytes"
HELD_STATE_BYTES = "cost/strategy_state_bytes"
HELD_BYTES = "cost/strategy_bytes"
CONTINUAL_TIME = "cost/continual_eval_s"  # within the training time: spent on continual evaluation


ACCURACY_PREFIX = "accuracy_frac/after_"


def accuracy(after: str, test: str) -> str:
    """Accuracy on test set `test` after training on experience `after`: one cell of the accuracy matrix."""
    return f"{ACCURACY_PREFIX}{after}/{test}"


def final_accuracy(test: str) -> str:
    return f"final_accuracy_frac/{test}"


def forgetting(test: str) -> str:
    return f"forgetting_frac/{test}"


def backward_transfer(test: str) -> str:
    """R[last][j] − R[j][j] for the test set of earlier experience j; `bwt` is their mean."""
    return f"bwt_frac/{test}"


def majority_baseline(test: str) -> str:
    return f"majority_baseline_frac/{test}"


def type_accuracy(after: str, test: str, question_type: str) -> str:
    return f"type_accuracy_frac/after_{after}/{test}/{question_type}"


def film(after: str, test: str, block: str, stat: str) -> str:
    """A gamma/beta statistic on `test` after experience `after`, for one FiLMed block (or `all`)."""
    return f"film/after_{after}/{test}/{block}/{stat}"


def film_drift_prefix(test: str) -> str:
    return f"film_drift/{test}/"


def film_drift(test: str, block: str, stat: str) -> str:
    """How far gamma/beta moved on `test` from the end of the first experience to the end of the last."""
    return f"{film_drift_prefix(test)}{block}/{stat}"


# --- the measures of clbench.evaluation.measures (definitions and papers: docs/measures.md) ------------------
LEARNING_ACCURACY = "learning_accuracy_frac"  # mean of the accuracy matrix's diagonal
NORMALISED_FORGETTING = "normalised_forgetting"  # mean over earlier test sets of forgetting / (peak − chance)
FORWARD_TRANSFER = "forward_transfer_frac"  # mean over later experiences of R[j][j] − from-scratch accuracy
INTRANSIGENCE = "intransigence_frac"  # mean over later experiences of joint accuracy − R[j][j]
NEGATIVE_FLIPS = "negative_flip_rate"  # mean over earlier test sets: right when learned, wrong at the end
POSITIVE_FLIPS = "positive_flip_rate"
MIN_ACC = "continual/min_acc_frac"  # mean over earlier test sets of their lowest accuracy since learned
WC_ACC = "continual/wc_acc_frac"  # worst-case accuracy after the last experience


def per_test(measure: str, test: str) -> str:
    """A measure's value for one test set, e.g. `forward_transfer_frac/CLEVR-Humans`."""
    return f"{measure}/{test}"


def type_forgetting(test: str, question_type: str) -> str:
    return f"type_forgetting_frac/{test}/{question_type}"


def reference_accuracy(reference: str, test: str) -> str:
    """Accuracy of a reference model ("scratch" or "joint") on `test`."""
    return f"reference_accuracy_frac/{reference}/{test}"


CONTINUAL_PREFIX = "continual_accuracy_frac/during_"


def continual(during: str, test: str) -> str:
    """Stepped: accuracy on the subset of `test` at each evaluated iteration of experience `during`."""
    return f"{CONTINUAL_PREFIX}{during}/{test}"


CONTINUAL_UNITS = {"min_accuracy": "_frac", "stability_gap": "_frac"}


def continual_measure_prefix(stat: str) -> str:
    """What every test set's `continual_measure` of `stat` starts with, e.g. `continual_stability_gap_frac/`."""
    return f"continual_{stat}{CONTINUAL_UNITS.get(stat, '')}/"


def continual_measure(during: str, test: str, stat: str) -> str:
    """min_accuracy, stability_gap (fractions) or recovery_iterations (a count) of one continual-evaluation curve."""
    return f"{continual_measure_prefix(stat)}during_{during}/{test}"


# --- the validation stream: the same figures, on each experience's held-out validation set ------------------
VALIDATION_PREFIX = "valid/"


def validation(name: str) -> str:
    """A figure measured on the validation stream instead of the test stream, e.g. `valid/average_accuracy_frac`."""
    return f"{VALIDATION_PREFIX}{name}"


def validation_continual(during: str, test: str) -> str:
    return validation(continual(during, test))
