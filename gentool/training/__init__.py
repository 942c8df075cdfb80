"""Training: the one loop that every model trains through, and what it needs around it.

    request       TrainRequest (what `gentool train` was asked) and every rule it must keep
    setup         the run folder to write (new, or resumed exactly) and the data
    session       everything one invocation holds: model, optimizers, batches, restored state
    step          the step contract: StepContext, train_step, optimizers and phases
    loop          fit → train_epoch → end_epoch, checkpoints and epoch grids
    logbook       logged values kept on the device, copied to the CPU at an interval
    tracking      --log: the loggers those values also go to, each kept apart from training
    display       the progress bar, and the signals that stop training
    speed         --amp, --compile, --channels-last, --sync-bn
    faults        a plugin's failure or a non-finite value, said in one line
    monitor       what is watched after each epoch: epochs.jsonl, evaluations, health, loss.png
    ema           the moving average of the weights (--ema)
    distributed   processes under torchrun
    benchmark     `gentool bench train`: images/s of training steps
    run           run_training: a request in, a trained run out

Generation, evaluation and the run folders sit below this package and never import it.
"""

from gentool.training.loop import TrainSummary
from gentool.training.request import TrainRequest
from gentool.training.run import run_training
from gentool.training.speed import Acceleration

__all__ = ["Acceleration", "TrainRequest", "TrainSummary", "run_training"]
