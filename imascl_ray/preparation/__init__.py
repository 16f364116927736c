"""Everything a run needs before its workers start, done once on the driver: one module per job.

Following a run from its config to its exported model crosses each module once:

1. :mod:`~imascl_ray.preparation.splits`: the corpus (a file, the hub, or this machine's gettext
   catalogues) cut to the pair set, cleaned of evaluation sentences, capped and split into train /
   validation / test files; the validation pairs are those of ``data.validation_pair_set``.
2. :mod:`~imascl_ray.preparation.student`: the student's starting checkpoint (the offline
   multilingual-e5-small is built on first use; its vocabulary optionally trimmed to the corpus), and
   :func:`load_student`, how the workers and the export load it later.
3. :mod:`~imascl_ray.preparation.teacher_cache`: the teacher embeds every unique training sentence once
   into a cache that trials and reruns share, in this process or on Ray Data actors
   (:mod:`~imascl_ray.preparation.teacher_pool`).
4. :mod:`~imascl_ray.preparation.mining`: for the ``hard_negatives`` loss, each training pair's
   teacher-nearest non-translations.

:func:`prepare_run` (:mod:`~imascl_ray.preparation.run`) runs them in that order and writes the
:class:`PreparedRun` that names the files; the workers only read files. Nothing here imports Ray but
the Ray Data teacher pool, and that only when ``teacher.workers`` asks for actors.
"""

from imascl_ray.preparation.run import PREPARED_FILE, PreparedRun, prepare_run
from imascl_ray.preparation.student import OFFLINE_MODEL, load_student, resolve_model
from imascl_ray.preparation.teacher_cache import SharedTeacherCache, build_shared_teacher_cache

__all__ = [
    "OFFLINE_MODEL",
    "PREPARED_FILE",
    "PreparedRun",
    "SharedTeacherCache",
    "build_shared_teacher_cache",
    "load_student",
    "prepare_run",
    "resolve_model",
]
