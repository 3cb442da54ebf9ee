"""The ``cyconv`` command: train, evaluate and use a digit classifier.

``cyconv train`` trains a LeNet-style network on the bundled MNIST-5k (or
on the full MNIST with ``--data DIR``) and saves it; ``cyconv evaluate``
reports its accuracy and confusion matrix; ``cyconv predict`` classifies
new images; ``cyconv bench`` times the kernels on this machine; ``cyconv
export`` writes a saved model as an ONNX graph.  Every failure is one line
on stderr and a non-zero exit.
"""

import argparse
import io
import math
import os
import signal
import sys
import time

import numpy as np

from . import (
    __version__, _bench, _threads, datasets, get_num_threads, set_num_threads, show_config,
)
from ._images import is_image_file
from .metrics import confusion_matrix
from .nn import Convolution, Dense, Flatten, MaxPooling, Sequential, Softmax, lenet
from .nn.optimizers import Adam

DEFAULT_OUTPUT = "cyconv-mnist.npz"
HELD_OUT = 1000
# The held-out digits of MNIST-5k do not depend on --seed, so that every
# model trained by `cyconv train` is scored by `cyconv evaluate` on the
# same 1,000 digits it never saw.
SPLIT_SEED = 0
IMAGE_SHAPE = (1, 28, 28)
CLASSES = 10

# Defaults measured to pass 97% held-out accuracy in well under a minute
# on a shared two-core machine (98.0% with seed 0, 98.3% and 98.6% with
# seeds 2 and 1).  Shifting the digits by a pixel and decaying the learning
# rate each gained about a point over plain Adam on the 4,000 digits.
DEFAULT_EPOCHS = 8
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 0.003
LEARNING_RATE_DECAY = 0.7  # per epoch
MAX_SHIFT = 1


class UsageError(Exception):
    """A bad command line; reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line rather than usage + error."""

    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def build_lenet(dtype=np.float32, rng=None):
    """The default network, :func:`cyconv.nn.lenet` for MNIST's digits.

    Examples
    --------
    >>> from cyconv.cli import build_lenet
    >>> build_lenet(rng=0).output_shape
    (10,)
    """
    return lenet(IMAGE_SHAPE, CLASSES, dtype=dtype, rng=rng)


def _describe(model):
    names = []
    for layer in model.layers:
        if isinstance(layer, Convolution):
            names.append(f"conv {layer.depth}@{layer.kernel_size[0]}x{layer.kernel_size[1]}")
        elif isinstance(layer, MaxPooling):
            names.append("max-pool")
        elif isinstance(layer, Dense):
            names.append(f"dense {layer.output_size}")
        elif not isinstance(layer, Flatten):
            names.append(type(layer).__name__)
    count = sum(p.value.size for p in model.parameters())
    return f"{' -> '.join(names)} ({count:,} parameters, {model.dtype})"


def _load_data(data_dir, dtype):
    """Return (x_train, y_train, x_test, y_test, description)."""
    if data_dir is None:
        images, labels = datasets.load_mnist_5k()
        train, test = datasets.stratified_split(labels, HELD_OUT, seed=SPLIT_SEED)
        description = (f"MNIST-5k (bundled): {len(train):,} training digits, "
                       f"{len(test):,} held out (stratified)")
        train_images, train_labels = images[train], labels[train]
        test_images, test_labels = images[test], labels[test]
    else:
        train_images, train_labels = datasets.load_mnist(data_dir, "train")
        test_images, test_labels = datasets.load_mnist(data_dir, "test")
        description = (f"MNIST from {data_dir}: {len(train_labels):,} training digits, "
                       f"{len(test_labels):,} test digits")
    for name, images in (("training", train_images), ("test", test_images)):
        if images.shape[1:] != IMAGE_SHAPE[1:]:
            raise ValueError(f"the {name} images are {images.shape[1]}x{images.shape[2]}, "
                             f"not 28x28")
    return (datasets.prepare_images(train_images, dtype), train_labels.astype(np.int64),
            datasets.prepare_images(test_images, dtype), test_labels.astype(np.int64),
            description)


def _held_out(data_dir, dtype):
    """The digits `evaluate` scores on: MNIST-5k's held-out 1,000 or MNIST's test set."""
    if data_dir is None:
        _, _, x, y, _ = _load_data(None, dtype)
        return x, y
    images, labels = datasets.load_mnist(data_dir, "test")
    return datasets.prepare_images(images, dtype), labels.astype(np.int64)


def _check_classifier(model, path):
    """Refuse a model that does not map 28x28 grey images to 10 scores."""
    try:
        shape = model.predict(np.zeros((1,) + IMAGE_SHAPE, dtype=model.dtype)).shape
    except ValueError as exc:
        raise ValueError(f"{path} does not take 28x28 grey images: {exc}") from None
    if shape != (1, CLASSES):
        raise ValueError(f"{path} does not output {CLASSES} digit scores (its output is "
                         f"{shape[1:]} per image)")


def _format_seconds(seconds):
    return f"{seconds:.1f} s"


def _check_writable(output, what="save to"):
    """Raise ValueError unless ``output`` can be written: before the work
    rather than after it."""
    if not output:
        raise ValueError(f"cannot {what} '': the output path is empty")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ValueError(f"cannot {what} {output}: no directory {directory}")
    if os.path.isdir(output):
        raise ValueError(f"cannot {what} {output}: it is a directory")
    if os.path.exists(output) and not os.path.isfile(output):
        raise ValueError(f"cannot {what} {output}: it is not a regular file")
    # Files are written beside their final name and moved into place, so
    # the directory must be writable.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"cannot {what} {output}: the directory {directory} is not writable")


def _plot_module(path):
    """cyconv.plot, once ``path`` and matplotlib are known to be usable."""
    _check_writable(path, "write the plot to")
    from . import plot

    plot._figure(1, 1)  # raises ImportError, with what to install, now
    return plot


def _thread_words():
    n = get_num_threads()
    if _threads.chosen() or n == 1:
        return f"{n} thread(s)"
    return f"up to {n} threads (the fastest count, timed as it trains)"


def _mpi_ranks(threads):
    """(rank, ranks) of this process in MPI's world.

    Unless ``--threads`` or OMP_NUM_THREADS say otherwise, the ranks that
    share a node share its cores: each gets cores / ranks on the node.
    """
    from .distributed import require_mpi, threads_per_rank

    world = require_mpi().COMM_WORLD
    if threads is None and "OMP_NUM_THREADS" not in os.environ:
        set_num_threads(threads_per_rank(world))
    return world.Get_rank(), world.Get_size()


def _abort_mpi(status):
    """End every rank of a distributed run one of whose ranks failed: the
    others would wait for it in a collective for ever."""
    MPI = sys.modules.get("mpi4py.MPI")
    if (MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized()
            and MPI.COMM_WORLD.Get_size() > 1):
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(status)


def _command_train(args, out):
    dtype = np.float64 if args.float64 else np.float32
    output = args.output
    rank, ranks = _mpi_ranks(args.threads) if args.distributed else (0, 1)
    if rank != 0:  # rank 0 alone prints and writes
        out = io.StringIO()
    # Fail now rather than after the training.
    if rank == 0:
        _check_writable(output)
    plot = _plot_module(args.plot) if args.plot is not None and rank == 0 else None
    x_train, y_train, x_test, y_test, description = _load_data(args.data, dtype)
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        description += f"; training on the first {len(y_train):,} only (--limit)"
    model = build_lenet(dtype, np.random.default_rng(args.seed))
    print(description, file=out)
    print(f"model: {_describe(model)}", file=out)
    print(f"training {args.epochs} epoch(s), batch {args.batch_size}, Adam from learning rate "
          f"{args.learning_rate:g}, seed {args.seed}, "
          f"{f'{ranks} ranks x ' if args.distributed else ''}{_thread_words()}", file=out)
    out.flush()
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
        loss="softmax_cross_entropy", optimizer=Adam(args.learning_rate),
        validation_data=(x_test, y_test), seed=args.seed, verbose=2 if args.quiet else 1,
        augment=datasets.RandomShift(MAX_SHIFT),
        learning_rate_schedule=lambda epoch: args.learning_rate * LEARNING_RATE_DECAY ** epoch,
        distributed=args.distributed,
    )
    elapsed = time.perf_counter() - start
    accuracy = history["val_accuracy"][-1]
    correct = int(round(accuracy * len(y_test)))
    if rank == 0:
        model.save(output)
    print(f"held-out accuracy: {100 * accuracy:.2f}% ({correct:,}/{len(y_test):,}) "
          f"after {_format_seconds(elapsed)} of training", file=out)
    print(f"saved the model to {output}; try: cyconv evaluate {output}", file=out)
    if plot is not None:
        plot.plot_history(history, args.plot)
        print(f"wrote the training curves to {args.plot}", file=out)
    return 0


def format_confusion_matrix(matrix):
    """A confusion matrix as text: rows are true classes, columns predicted.

    Examples
    --------
    >>> import numpy as np
    >>> from cyconv.cli import format_confusion_matrix
    >>> print(format_confusion_matrix(np.array([[5, 1], [0, 7]])))
             0   1
        0    5   1
        1    0   7
    """
    width = max(4, len(str(matrix.max())) + 1)
    header = " " * 6 + "".join(str(c).rjust(width) for c in range(len(matrix)))
    lines = [header]
    for label, row in enumerate(matrix):
        lines.append(f"{label:>5} " + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def _command_evaluate(args, out):
    plot = _plot_module(args.plot) if args.plot is not None else None
    model = Sequential.load(args.model)
    _check_classifier(model, args.model)
    x, y = _held_out(args.data, model.dtype)
    start = time.perf_counter()
    predictions = np.argmax(model.predict(x), axis=1)
    elapsed = time.perf_counter() - start
    correct = int(np.sum(predictions == y))
    print(f"{args.model} on the {len(y):,} "
          f"{'held-out digits of MNIST-5k' if args.data is None else 'MNIST test digits'}",
          file=out)
    print(f"accuracy: {100 * correct / len(y):.2f}% ({correct:,}/{len(y):,}) "
          f"in {_format_seconds(elapsed)}", file=out)
    matrix = confusion_matrix(y, predictions, num_classes=CLASSES)
    print("confusion matrix (rows: true digit, columns: predicted digit):", file=out)
    print(format_confusion_matrix(matrix), file=out)
    if plot is not None:
        plot.plot_confusion_matrix(matrix, args.plot)
        print(f"wrote the confusion matrix to {args.plot}", file=out)
    return 0


def _read_images(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if path.endswith(".npy"):
        try:
            images = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"{path} is not a readable .npy file: {exc}") from None
    else:
        images = datasets.read_idx(path)
    try:
        x = datasets.prepare_images(images)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if x.shape[2:] != IMAGE_SHAPE[1:]:
        raise ValueError(f"{path} holds {x.shape[2]}x{x.shape[3]} images; the model needs "
                         f"28x28 grey images")
    return x


def _read_inputs(path):
    """(names, images) of one file: an image file is one input named by its
    path; an IDX or .npy array gives ``path[i]`` for each of its images."""
    if is_image_file(path):
        return [path], datasets.read_image(path, IMAGE_SHAPE[1:])[np.newaxis]
    images = _read_images(path)
    return [f"{path}[{index}]" for index in range(len(images))], images


def _command_predict(args, out):
    model = Sequential.load(args.model)
    _check_classifier(model, args.model)
    # Every file is read (and checked) before the first line is printed.
    names, batches = [], []
    for path in args.images:
        file_names, images = _read_inputs(path)
        names += file_names
        batches.append(images.astype(model.dtype, copy=False))
    probabilities = Softmax().forward(model.predict(np.concatenate(batches)))
    width = max(5, max(map(len, names)))
    print(f"{'image':<{width}}  digit  probability", file=out)
    for name, row in zip(names, probabilities):
        digit = int(np.argmax(row))
        print(f"{name:<{width}}  {digit:>5}  {row[digit]:>11.4f}", file=out)
    return 0


def _command_bench(args, out):
    dtype = np.float64 if args.float64 else np.float32
    print(f"cyconv {__version__}, {np.dtype(dtype).name}, {get_num_threads()} thread(s); "
          f"medians over about {args.budget:g} s of calls each", file=out)
    for key, value in show_config(mode="dicts").items():
        print(f"{key}: {value}", file=out)
    print(f"{'layer':<38} {'operation':<26} {'ms':>9} {'GFLOP/s':>8}", file=out)
    for layer in _bench.LAYERS:
        for operation, call, flops in _bench.layer_calls(layer, dtype):
            seconds = _bench.median_seconds(call, args.budget)
            rate = f"{flops / seconds / 1e9:8.1f}" if flops else f"{'-':>8}"
            print(f"{str(layer):<38} {operation:<26} {1e3 * seconds:9.3f} {rate}", file=out)
            out.flush()
    batch = DEFAULT_BATCH_SIZE
    seconds = _bench.median_seconds(_bench.training_step_call(build_lenet, batch, dtype),
                                    args.budget)
    print(f"training step of `cyconv train`'s network, batch {batch}: {1e3 * seconds:.3f} ms "
          f"({batch / seconds:,.0f} images/s)", file=out)
    print("(comparisons with PyTorch, numpy and the tutorial's loops: benchmarks/run.py, "
          "in cyconv's source tree (a git checkout); it is not installed with the package)",
          file=out)
    return 0


def _command_selftest(args, out):
    from ._selftest import run

    return 0 if run(max_examples=args.examples, stream=out) else 1


def _command_export(args, out):
    model = Sequential.load(args.model)
    model.to_onnx(args.output)
    print(f"wrote {args.output}: ONNX graph of {args.model}, input 'input' and output "
          f"'output' (float32, any batch size)", file=out)
    return 0


def make_parser():
    """The argument parser of the ``cyconv`` command.

    Examples
    --------
    >>> from cyconv.cli import make_parser
    >>> make_parser().parse_args(["train", "--epochs", "2"]).epochs
    2
    """
    parser = _Parser(prog="cyconv", description=(
        "Train and use a convolutional network for handwritten digits, on the CPU."))
    parser.add_argument("--version", action="version", version=f"cyconv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train", help="train a LeNet-style network on MNIST-5k (or full MNIST)",
        description="Train a LeNet-style CNN (conv, ReLU, pool, conv, ReLU, pool, dense) on "
                    "the bundled MNIST-5k (4,000 training digits, 1,000 held out) or on the "
                    "full MNIST with --data, and save it.")
    train.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                       help=f"passes over the training digits (default {DEFAULT_EPOCHS})")
    train.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                       help=f"digits per gradient step (default {DEFAULT_BATCH_SIZE})")
    train.add_argument("--learning-rate", type=_positive_float, default=DEFAULT_LEARNING_RATE,
                       help=f"Adam's first learning rate, decayed by {LEARNING_RATE_DECAY} "
                            f"each epoch (default {DEFAULT_LEARNING_RATE})")
    train.add_argument("--seed", type=_seed, default=0,
                       help="seed of the initial weights, shuffling and augmentation "
                            "(default 0); training is reproducible bit for bit")
    train.add_argument("--output", "-o", default=DEFAULT_OUTPUT,
                       help=f"where to save the model (default {DEFAULT_OUTPUT})")
    train.add_argument("--data", metavar="DIR",
                       help="train on the full MNIST IDX files in DIR instead "
                            "(train-images-idx3-ubyte[.gz] and so on)")
    train.add_argument("--limit", type=_positive_int, metavar="N",
                       help="train on only the first N training digits, for a quick try")
    train.add_argument("--float64", action="store_true", help="compute in float64")
    train.add_argument("--plot", metavar="PNG",
                       help="also draw the loss and accuracy curves to this file "
                            "(needs matplotlib: pip install 'cyconv[plot]')")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI ranks (needs cyconv[mpi]): run as "
                            "mpirun -n K python -m mpi4py -m cyconv train --distributed; "
                            "--batch-size is then the global batch, and rank 0 saves")
    train.set_defaults(run=_command_train)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy and confusion matrix of a saved model",
        description="Print a saved model's accuracy and confusion matrix on the 1,000 held-out "
                    "digits of MNIST-5k, or on the MNIST test set with --data.")
    evaluate.add_argument("model", metavar="MODEL", help="a model saved by cyconv train")
    evaluate.add_argument("--data", metavar="DIR", help="use the MNIST test set in DIR")
    evaluate.add_argument("--plot", metavar="PNG",
                          help="also draw the confusion matrix to this file "
                               "(needs matplotlib: pip install 'cyconv[plot]')")
    evaluate.set_defaults(run=_command_evaluate)

    predict = commands.add_parser(
        "predict", help="classify images with a saved model",
        description="Print the predicted digit of each image in the files given, one line "
                    "per image: picture files (PNG, JPEG, BMP, GIF, TIFF, WebP; needs "
                    "Pillow: pip install 'cyconv[images]'), IDX files (plain or .gz) or "
                    ".npy arrays of shape (N, 28, 28) or (28, 28).  A picture is turned "
                    "grey, resized to 28x28 and, when its border is lighter than "
                    "mid-grey (a dark pen on white paper), inverted to MNIST's light "
                    "digit on black.  Integer pixels are 0-255 grey levels, floats are "
                    "taken as already in [0, 1].")
    predict.add_argument("model", metavar="MODEL", help="a model saved by cyconv train")
    predict.add_argument("images", metavar="FILE", nargs="+",
                         help="a picture, or an IDX or .npy file of images")
    predict.set_defaults(run=_command_predict)

    bench = commands.add_parser(
        "bench", help="time the kernels on this machine",
        description="Time cyconv's convolution and max pooling, forward and backward, on the "
                    "layer shapes of the benchmark suite, and a training step of the default "
                    "network; print medians and GFLOP/s.")
    bench.add_argument("--budget", type=_positive_float, default=0.5, metavar="SECONDS",
                       help="seconds of calls per measurement (default 0.5)")
    bench.add_argument("--float64", action="store_true", help="compute in float64")
    bench.set_defaults(run=_command_bench)

    selftest = commands.add_parser(
        "selftest", help="check the installed kernels against independent references",
        description="Run every public kernel, float32 and float64, on random cases "
                    "(hypothesis) against scipy.signal, np.pad and numpy's sliding windows, "
                    "and print what was checked; exit status 1 if anything differs.  Needs "
                    "hypothesis: pip install 'cyconv[test]'.")
    selftest.add_argument("--examples", type=_positive_int, default=50, metavar="N",
                          help="random cases per check and dtype (default 50)")
    selftest.set_defaults(run=_command_selftest)

    export = commands.add_parser(
        "export", help="write a saved model as an ONNX graph",
        description="Write a model saved by cyconv (any cyconv Sequential, not only the "
                    "digit classifier) as an ONNX graph that onnxruntime and other ONNX "
                    "runtimes run with the same predictions. Needs the onnx package: "
                    'pip install "cyconv[onnx]".')
    export.add_argument("model", metavar="MODEL", help="a model saved by cyconv (.npz)")
    export.add_argument("output", metavar="ONNX", help="the ONNX file to write")
    export.set_defaults(run=_command_export)

    train.add_argument("--quiet", "-q", action="store_true",
                       help="no progress bar, only a line per epoch")
    for sub in (train, evaluate, predict, bench, selftest, export):
        sub.add_argument("--threads", type=_positive_int, metavar="N",
                         help="threads for the kernels (default: OMP_NUM_THREADS or every core)")
    return parser


def _one_line(exc):
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return f"no such file or directory: {exc.filename}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None):
    """Run the command line; return the exit status.

    Examples
    --------
    >>> from cyconv.cli import main
    >>> main(["train", "--epochs", "0"])
    2
    """
    # A command's thread count is its own: main() called from Python (or a
    # test) leaves the caller's setting as it found it.
    saved_threads = _threads._num_threads
    args = None
    try:
        args = make_parser().parse_args(argv)
        if args.threads is not None:  # every command takes --threads
            set_num_threads(args.threads)
        return args.run(args, sys.stdout)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cyconv: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as exc:
        print(f"cyconv: error: {_one_line(exc)}", file=sys.stderr)
        if getattr(args, "distributed", False):
            _abort_mpi(1)
        return 1
    finally:
        set_num_threads(saved_threads)


# What a shell reports for a program ended by SIGPIPE, as `cat` is when
# `cat big | head -1` closes the pipe.
SIGPIPE_STATUS = 128 + getattr(signal, "SIGPIPE", 13)


def _closed_pipe():
    """The reader of our output went away (``cyconv predict ... | head -1``):
    stop quietly.  As Python's documentation of SIGPIPE recommends, stdout
    is pointed at devnull so that the interpreter's last flush at exit
    cannot raise (and print "Broken pipe") again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # stdout is not a real file (a test's capture): nothing to flush
    return SIGPIPE_STATUS


def entry_point():
    """The console script: exit with :func:`main`'s status."""
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = _closed_pipe()
    sys.exit(status)
