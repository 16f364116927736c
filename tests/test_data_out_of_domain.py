"""The out-of-domain held-out set: catalogues of other software, deduplicated against training."""

from __future__ import annotations

import sys

import pytest

from imascl_ray.cli import main
from imascl_ray.data import read_corpus
from imascl_ray.data.out_of_domain import build_out_of_domain_corpus, package_locale_roots
from imascl_ray.data.split import normalise_text
from imascl_ray.errors import InputError
from tests.test_data_gettext import write_mo

WEB_MESSAGES = {
    "Save the changes to this page": "Enregistrer les modifications de cette page",
    "Delete the selected items permanently": "Supprimer définitivement les éléments sélectionnés",
    "Open the selected file in a new window": "Ouvrir le fichier sélectionné dans une nouvelle fenêtre",
}
"""The third message is also in the 'training' corpus below (English side): it must be dropped."""


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package ``webkit_fake`` shipping ``locale/fr`` and ``sub/locale/ja`` catalogues."""
    root = tmp_path / "site"
    package = root / "webkit_fake"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('finding catalogues must not import me')\n")
    write_mo(package / "locale" / "fr" / "LC_MESSAGES" / "webkit.mo", WEB_MESSAGES)
    write_mo(
        package / "admin" / "locale" / "ja" / "LC_MESSAGES" / "admin.mo",
        {"Save the changes to this page": "このページへの変更を保存します"},
    )
    monkeypatch.syspath_prepend(str(root))
    for name in [name for name in sys.modules if name.startswith("webkit_fake")]:
        monkeypatch.delitem(sys.modules, name)
    return package


def test_locale_roots_are_found_inside_the_package_without_importing_it(fake_package):
    roots = package_locale_roots(["webkit_fake"])
    assert roots == sorted([fake_package / "admin" / "locale", fake_package / "locale"])
    assert "webkit_fake" not in sys.modules


def test_missing_package_or_catalogues_is_one_clear_error(fake_package, tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"--source no_such_package_xyz: no installed Python package"):
        package_locale_roots(["no_such_package_xyz"])
    (tmp_path / "site" / "bare_fake").mkdir()
    (tmp_path / "site" / "bare_fake" / "__init__.py").write_text("")
    with pytest.raises(InputError, match=r"--source bare_fake: the package ships no locale/ folder"):
        package_locale_roots(["bare_fake"])


def test_pairs_sharing_a_sentence_with_training_are_dropped_on_either_side(fake_package):
    training = [
        "OPEN the selected  file in a new window",  # the English side of a pair, in another case and spacing
        "Supprimer définitivement les éléments sélectionnés",  # the French side of another pair
    ]
    corpus, report, dropped = build_out_of_domain_corpus(
        ["webkit_fake"], "en,fr,ja", "en-xx", exclude={"training": training}
    )
    assert report.catalogues == 2
    assert corpus.pair_counts() == {"en-fr": 1, "en-ja": 1}
    assert dropped.dropped == 2  # one by its English side (after normalisation), one by its French side
    assert {normalise_text(s) for s in corpus.sentences()}.isdisjoint(normalise_text(s) for s in training)
    assert set(corpus.src) == {"Save the changes to this page"}


def test_cli_builds_the_set_and_refuses_exclusion_without_source(fake_package, tmp_path, capsys):
    training = tmp_path / "train.tsv"
    training.write_text(
        "src_lang\ttgt_lang\tsrc\ttgt\nen\tfr\tOpen the selected file in a new window\tOuvrir\n", "utf-8"
    )
    out = tmp_path / "ood.tsv"
    argv = ["corpus", "gettext", "--source", "webkit_fake", "--langs", "en,fr,ja", "--pairs", "en-xx"]
    assert main([*argv, "--exclude-corpus", str(training), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "dropped 1 pairs sharing a sentence with" in printed
    built = read_corpus(out)
    assert built.pair_counts() == {"en-fr": 2, "en-ja": 1}
    assert "Open the selected file in a new window" not in built.src

    code = main(["corpus", "gettext", "--exclude-corpus", str(training), "--out", str(tmp_path / "x.tsv")])
    assert code == 2
    assert "--exclude-corpus: only with --source" in capsys.readouterr().err
    assert not (tmp_path / "x.tsv").exists()
