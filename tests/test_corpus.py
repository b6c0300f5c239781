"""Corpus readers (common/corpus.py, common/nsmc.py) and the data/kowiki.py, data/nsmc.py scripts.

The scripts run as subprocesses, as a user would run them. The last tests read
the real corpora and are skipped unless $CORPUS_DIR is set.
"""
from __future__ import annotations

import bz2
import collections
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.cli import REPO_ROOT, SAMPLE_DIR, UserError, corpus_dir
from common.corpus import (is_empty_article, is_redirect_article, iter_kowiki_json, iter_wikiextractor, skip_reason,
                           wikiextractor_files)
from common.nsmc import read_nsmc_json, read_nsmc_tsv

SAMPLE_KOWIKI = SAMPLE_DIR / "kowiki"
SAMPLE_TRAIN = SAMPLE_DIR / "nsmc" / "ratings_train.txt"
SAMPLE_TEST = SAMPLE_DIR / "nsmc" / "ratings_test.txt"


def doc(doc_id: str, title: str, body: str) -> str:
    """One record as wikiextractor writes it."""
    return f'<doc id="{doc_id}" url="https://ko.wikipedia.org/wiki?curid={doc_id}" title="{title}">\n{title}\n\n{body}\n</doc>\n'


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def run_script(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "CORPUS_DIR"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2 with one 'error: ...' line on stderr and no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# --- wikiextractor output ----------------------------------------------------

def test_sample_kowiki_reads_both_files():
    files = wikiextractor_files(SAMPLE_KOWIKI)
    assert [f.name for f in files] == ["wiki_00", "wiki_01.bz2"]
    articles = list(iter_wikiextractor(SAMPLE_KOWIKI))
    assert len(articles) == 71
    assert len({a["id"] for a in articles}) == 71
    assert articles[0]["title"] == "한라산"
    assert collections.Counter(skip_reason(a) for a in articles) == {None: 69, "empty": 1, "redirect": 1}
    kept = [a for a in articles if skip_reason(a) is None]
    for article in kept:
        assert set(article) == {"id", "title", "text"}
        assert article["text"] and article["text"][0] != article["title"]  # title line dropped
        assert all(p and p == p.strip() for p in article["text"])
    # Enough text to train a small vocabulary on.
    assert sum(len(p) for a in kept for p in a["text"]) > 25_000


def test_paragraphs_blank_line_and_consecutive_lines(tmp_path):
    body = "첫 문단이다.\n\n둘째 문단이다.\n셋째 줄은 바로 이어진다.\n\n\n  넷째는 공백을 두른다.  "
    path = write(tmp_path / "wiki_00", doc("1", "문단", body))
    [article] = iter_wikiextractor(path)
    assert article == {
        "id": "1",
        "title": "문단",
        "text": ["첫 문단이다.", "둘째 문단이다.", "셋째 줄은 바로 이어진다.", "넷째는 공백을 두른다."],
    }


def test_title_is_unescaped_and_title_line_dropped(tmp_path):
    path = write(tmp_path / "wiki_00", doc("3", "KT&amp;G", "KT&G는 회사이다. A &amp; B는 그대로."))
    [article] = iter_wikiextractor(path)
    assert article["title"] == "KT&G"
    # the text is not unescaped: wikiextractor leaves it as it was
    assert article["text"] == ["KT&G는 회사이다. A &amp; B는 그대로."]


def test_record_without_title_line_keeps_first_line(tmp_path):
    path = write(tmp_path / "wiki_00", '<doc id="4" url="u" title="제목">\n본문 첫 줄.\n</doc>\n')
    assert next(iter_wikiextractor(path))["text"] == ["본문 첫 줄."]


def test_folder_is_read_recursively_in_sorted_order(tmp_path):
    write(tmp_path / "AB" / "wiki_00", doc("30", "셋", "다."))
    write(tmp_path / "AA" / "wiki_01", doc("20", "둘", "나."))
    (tmp_path / "AA" / "wiki_00.bz2").write_bytes(bz2.compress(doc("10", "하나", "가.").encode()))
    write(tmp_path / "AA" / "notes.txt", "not a wikiextractor file")
    assert [a["title"] for a in iter_wikiextractor(tmp_path)] == ["하나", "둘", "셋"]


def test_empty_and_redirect_detection():
    def article(*text):
        return {"id": "1", "title": "t", "text": list(text)}

    assert is_empty_article(article()) and skip_reason(article()) == "empty"
    for redirect in ("#넘겨주기 서울", "#REDIRECT 서울", "#redirect [[서울]]", "넘겨주기 서울"):
        assert is_redirect_article(article(redirect)), redirect
        assert skip_reason(article(redirect)) == "redirect"
    # prose about redirects is an article
    assert not is_redirect_article(article("넘겨주기는 위키에서 다른 문서로 보내는 기능이다."))
    assert not is_redirect_article(article("#넘겨주기 서울", "둘째 문단", "셋째 문단"))
    assert skip_reason(article("보통 문단.")) is None


def test_missing_path_names_it_and_the_fix(tmp_path):
    with pytest.raises(UserError, match=r"not found: .*nowhere.*download\.py"):
        list(iter_wikiextractor(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="no wikiextractor files"):
        list(iter_wikiextractor(tmp_path))


def test_truncated_and_corrupt_bz2_name_the_file(tmp_path):
    whole = bz2.compress((doc("1", "가", "가나다라. " * 500) * 20).encode())
    truncated = tmp_path / "cut" / "wiki_00.bz2"
    truncated.parent.mkdir()
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"wiki_00\.bz2: corrupt or truncated"):
        list(iter_wikiextractor(truncated))
    garbage = tmp_path / "bad" / "wiki_00.bz2"
    garbage.parent.mkdir()
    garbage.write_bytes(b"BZh9 this is not bzip2 data at all")
    with pytest.raises(UserError, match=r"wiki_00\.bz2: corrupt or truncated"):
        list(iter_wikiextractor(garbage))


def test_reading_streams_articles_before_a_later_bad_file(tmp_path):
    write(tmp_path / "AA" / "wiki_00", doc("1", "가", "첫 글."))
    (tmp_path / "AA" / "wiki_01.bz2").write_bytes(b"BZh9 broken")
    articles = iter_wikiextractor(tmp_path)
    assert next(articles)["title"] == "가"  # yielded before the bad file is opened
    with pytest.raises(UserError, match="wiki_01.bz2"):
        next(articles)


def test_malformed_records_name_file_and_line(tmp_path):
    unclosed = write(tmp_path / "a" / "wiki_00", doc("1", "가", "글.") + '<doc id="2" url="u" title="나">\n나\n\n끊김')
    with pytest.raises(UserError, match=r"wiki_00:6: record has no </doc>"):
        list(iter_wikiextractor(unclosed))
    stray = write(tmp_path / "b" / "wiki_00", "여기는 doc 밖의 글\n" + doc("1", "가", "글."))
    with pytest.raises(UserError, match=r"wiki_00:1: expected a <doc"):
        list(iter_wikiextractor(stray))
    nested = write(tmp_path / "c" / "wiki_00", '<doc id="1" url="u" title="가">\n가\n' + doc("2", "나", "글."))
    with pytest.raises(UserError, match=r"wiki_00:3: new <doc> before the </doc>"):
        list(iter_wikiextractor(nested))


# --- data/kowiki.json ----------------------------------------------------------

def test_kowiki_json_round_trip_and_errors(tmp_path):
    articles = [{"id": "1", "title": "가", "text": ["문단 하나.", "문단 둘."]}, {"id": "2", "title": "나", "text": ["글."]}]
    good = write(tmp_path / "kowiki.json", "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in articles))
    assert list(iter_kowiki_json(good)) == articles

    with pytest.raises(UserError, match=r"not found: .*missing\.json.*kowiki\.py"):
        next(iter_kowiki_json(tmp_path / "missing.json"))
    not_json = write(tmp_path / "bad.json", json.dumps(articles[0]) + "\n{broken\n")
    with pytest.raises(UserError, match=r"bad\.json:2: not JSON.*kowiki\.py"):
        list(iter_kowiki_json(not_json))
    no_text = write(tmp_path / "keys.json", '\n{"id": "1", "title": "가"}\n')
    with pytest.raises(UserError, match=r"keys\.json:2: expected an article"):
        list(iter_kowiki_json(no_text))


# --- NSMC ---------------------------------------------------------------------

def test_sample_nsmc_tsv():
    train, train_skipped = read_nsmc_tsv(SAMPLE_TRAIN)
    test, test_skipped = read_nsmc_tsv(SAMPLE_TEST)
    assert (len(train), len(test)) == (400, 120)
    assert train_skipped == {"empty document": 1} and not test_skipped
    assert collections.Counter(r["label"] for r in train) == {0: 200, 1: 200}
    assert collections.Counter(r["label"] for r in test) == {0: 60, 1: 60}
    assert all(isinstance(r["id"], str) and r["document"].strip() for r in train + test)
    # quoting is off: published-style doubled quotes stay as they are
    assert any(r["document"].startswith('"""') for r in train)
    assert not {r["document"] for r in train} & {r["document"] for r in test}


def test_nsmc_tsv_edge_cases(tmp_path):
    path = write(
        tmp_path / "ratings.txt",
        "id\tdocument\tlabel\n"
        "1\t좋아요\t1\n"
        '2\t"따옴표"가 ""그대로"" 남는다\t0\n'
        "3\t\t1\n"
        "4\t   \t0\n"
        "5\t라벨이 이상함\t2\n"
        "6\t라벨 없음\t\n"
        "7\t칸이\t너무\t많다\t1\n"
        "8\t칸이 모자람\n"
        "9\tCRLF 줄끝\t1\r\n"
        "\n",
    )
    rows, skipped = read_nsmc_tsv(path)
    assert rows == [
        {"id": "1", "document": "좋아요", "label": 1},
        {"id": "2", "document": '"따옴표"가 ""그대로"" 남는다', "label": 0},
        {"id": "9", "document": "CRLF 줄끝", "label": 1},
    ]
    assert skipped == {"empty document": 2, "bad label": 2, "wrong column count": 2}


def test_nsmc_tsv_missing_file_or_header(tmp_path):
    with pytest.raises(UserError, match=r"not found: .*nope\.txt.*download\.py"):
        read_nsmc_tsv(tmp_path / "nope.txt")
    headless = write(tmp_path / "headless.txt", "1\t좋아요\t1\n")
    with pytest.raises(UserError, match=r"headless\.txt:1: missing the NSMC header"):
        read_nsmc_tsv(headless)
    with_bom = write(tmp_path / "bom.txt", "\ufeffid\tdocument\tlabel\n1\t좋아요\t1\n")
    assert read_nsmc_tsv(with_bom)[0] == [{"id": "1", "document": "좋아요", "label": 1}]


def test_nsmc_json_errors(tmp_path):
    good = write(tmp_path / "good.json", '{"id": "1", "document": "좋다", "label": 1}\n')
    assert read_nsmc_json(good) == [{"id": "1", "document": "좋다", "label": 1}]
    with pytest.raises(UserError, match=r"not found: .*nsmc\.py"):
        read_nsmc_json(tmp_path / "missing.json")
    for name, bad_line in [
        ("label2", '{"id": "2", "document": "x", "label": 2}'),
        ("labelstr", '{"id": "2", "document": "x", "label": "1"}'),
        ("labelbool", '{"id": "2", "document": "x", "label": true}'),
    ]:
        path = write(tmp_path / f"{name}.json", '{"id": "1", "document": "좋다", "label": 0}\n' + bad_line + "\n")
        with pytest.raises(UserError, match=rf"{name}\.json:2: label must be 0 or 1"):
            read_nsmc_json(path)
    not_json = write(tmp_path / "broken.json", "id\tdocument\tlabel\n")
    with pytest.raises(UserError, match=r"broken\.json:1: not JSON"):
        read_nsmc_json(not_json)
    no_document = write(tmp_path / "nodoc.json", '{"id": "1", "label": 0}\n')
    with pytest.raises(UserError, match=r"nodoc\.json:1: expected id and document"):
        read_nsmc_json(no_document)


# --- the scripts ----------------------------------------------------------------

def test_kowiki_script_on_sample(tmp_path):
    output = tmp_path / "kowiki.json"
    result = run_script("data/kowiki.py", "--input", str(SAMPLE_KOWIKI), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert "wrote 69 articles" in result.stdout and "1 empty, 1 redirect" in result.stdout
    articles = list(iter_kowiki_json(output))
    assert len(articles) == 69 and articles[0]["title"] == "한라산"
    assert list(tmp_path.iterdir()) == [output]  # no temporary file left behind


def test_kowiki_script_from_inside_data_and_via_corpus_dir(tmp_path):
    output = tmp_path / "a.json"
    result = run_script("kowiki.py", "--input", "sample/kowiki", "--output", str(output), cwd=REPO_ROOT / "data")
    assert result.returncode == 0, result.stderr
    # the default input is $CORPUS_DIR/kowiki
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    (corpora / "kowiki").symlink_to(SAMPLE_KOWIKI, target_is_directory=True)
    result = run_script("data/kowiki.py", "--output", str(tmp_path / "b.json"), env={"CORPUS_DIR": str(corpora)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.json").read_bytes() == output.read_bytes()


def test_kowiki_script_bad_input_keeps_existing_output(tmp_path):
    output = write(tmp_path / "kowiki.json", "previous good output\n")
    missing = run_script("data/kowiki.py", "--input", str(tmp_path / "nope"), "--output", str(output))
    assert_user_error(missing, "nope", "download.py", "sample")
    no_default = run_script("data/kowiki.py", "--output", str(output), env={"CORPUS_DIR": str(tmp_path / "none")})
    assert_user_error(no_default, "kowiki", "download.py", "--input")

    # The corrupt file comes after a good one, so some articles were already written.
    bad = tmp_path / "bad"
    write(bad / "AA" / "wiki_00", doc("1", "가", "글."))
    compressed = bz2.compress(doc("2", "나", "글. " * 2000).encode())
    (bad / "AA" / "wiki_01.bz2").write_bytes(compressed[: len(compressed) // 2])
    corrupt = run_script("data/kowiki.py", "--input", str(bad), "--output", str(output))
    assert_user_error(corrupt, "wiki_01.bz2", "corrupt or truncated")
    assert output.read_text(encoding="utf-8") == "previous good output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "kowiki.json"]


@pytest.mark.skipif(importlib.util.find_spec("wikiextractor") is None,
                    reason="wikiextractor not installed (pip install -r requirements-extra.txt)")
def test_kowiki_script_on_a_raw_dump(tmp_path):
    pages = [
        ("7", "시험 문서", "", "'''시험 문서'''는 [[도구]]를 시험한다.\n\n첫째 & 둘째 문단이다."),
        ("8", "넘김", '<redirect title="시험 문서" />', "#넘겨주기 [[시험 문서]]"),
        ("9", "빈 문서", "", "{{없는틀}}"),
    ]
    # wikiextractor reads the dump line by line: one tag per line, as in a real dump.
    xml = ['<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="ko">',
           "  <siteinfo>", "    <sitename>위키백과</sitename>", "    <dbname>kowiki</dbname>",
           "    <base>https://ko.wikipedia.org/wiki/x</base>", "    <case>first-letter</case>",
           "    <namespaces>", '      <namespace key="0" case="first-letter" />',
           '      <namespace key="10" case="first-letter">틀</namespace>', "    </namespaces>",
           "  </siteinfo>"]
    for page_id, title, redirect, text in pages:
        xml += ["  <page>", f"    <title>{title}</title>", "    <ns>0</ns>", f"    <id>{page_id}</id>"]
        xml += [f"    {redirect}"] if redirect else []
        xml += ["    <revision>", f"      <id>1{page_id}</id>",
                f'      <text xml:space="preserve">{text.replace("&", "&amp;")}</text>', "    </revision>", "  </page>"]
    xml.append("</mediawiki>\n")
    dump = tmp_path / "kowiki-test-pages-articles.xml.bz2"
    dump.write_bytes(bz2.compress("\n".join(xml).encode()))
    output = tmp_path / "kowiki.json"
    result = run_script("data/kowiki.py", "--input", str(dump), "--output", str(output))
    assert result.returncode == 0, result.stderr
    [article] = iter_kowiki_json(output)
    assert article["title"] == "시험 문서"
    assert article["text"] == ["시험 문서는 도구를 시험한다.", "첫째 & 둘째 문단이다."]
    assert "wrote 1 articles" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [dump.name, "kowiki.json"]  # extraction folder removed

    truncated = tmp_path / "cut.xml.bz2"
    truncated.write_bytes(dump.read_bytes()[:150])
    result = run_script("data/kowiki.py", "--input", str(truncated), "--output", str(output))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: wikiextractor failed on")
    assert len(list(iter_kowiki_json(output))) == 1


def test_nsmc_script_on_sample(tmp_path):
    train_out, test_out = tmp_path / "train.json", tmp_path / "test.json"
    result = run_script("data/nsmc.py", "--train", str(SAMPLE_TRAIN), "--test", str(SAMPLE_TEST),
                        "--train_output", str(train_out), "--test_output", str(test_out))
    assert result.returncode == 0, result.stderr
    assert "train: kept 400 rows (200 negative, 200 positive), skipped: 1 empty document" in result.stdout
    assert "test: kept 120 rows" in result.stdout
    assert read_nsmc_json(train_out) == read_nsmc_tsv(SAMPLE_TRAIN)[0]
    assert read_nsmc_json(test_out) == read_nsmc_tsv(SAMPLE_TEST)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.json", "train.json"]


def test_nsmc_script_bad_input_writes_nothing(tmp_path):
    train_out = write(tmp_path / "train.json", "old\n")
    test_out = tmp_path / "test.json"
    outputs = ["--train_output", str(train_out), "--test_output", str(test_out)]
    missing = run_script("data/nsmc.py", "--train", str(SAMPLE_TRAIN), "--test", str(tmp_path / "nope.txt"), *outputs)
    assert_user_error(missing, "test file not found", "nope.txt", "download.py", "--train")
    headless = write(tmp_path / "headless.txt", "1\t좋다\t1\n")
    result = run_script("data/nsmc.py", "--train", str(SAMPLE_TRAIN), "--test", str(headless), *outputs)
    assert_user_error(result, "headless.txt:1", "header")
    no_default = run_script("data/nsmc.py", *outputs, env={"CORPUS_DIR": str(tmp_path / "none")})
    assert_user_error(no_default, "train file not found", "download.py")
    assert train_out.read_text() == "old\n" and not test_out.exists()


# --- the real corpora (only where $CORPUS_DIR is set) ----------------------------

CORPORA = corpus_dir()
needs_corpora = pytest.mark.skipif(CORPORA is None, reason="real corpora not available: set CORPUS_DIR")


@needs_corpora
def test_real_nsmc_train():
    rows, skipped = read_nsmc_tsv(CORPORA / "nsmc" / "ratings_train.txt")
    # 150,000 reviews, of which only a handful are empty
    assert len(rows) + sum(skipped.values()) == 150_000
    assert set(skipped) <= {"empty document"} and skipped["empty document"] < 20
    labels = collections.Counter(row["label"] for row in rows)
    assert abs(labels[0] - labels[1]) < 0.01 * len(rows)
    # quoting off: the published file's quoted reviews keep their quote characters
    assert sum(row["document"].startswith('"') for row in rows) > 100


@needs_corpora
def test_real_kowiki_first_file():
    first = sorted((CORPORA / "kowiki").glob("*/wiki_*"))[0]
    articles = list(iter_wikiextractor(first))
    assert len(articles) > 50
    assert len({a["id"] for a in articles}) == len(articles)
    kept = [a for a in articles if skip_reason(a) is None]
    assert len(kept) > 0.8 * len(articles)
    assert all(a["title"] and a["id"].isdigit() for a in articles)
    assert all(not p.startswith(("<doc ", "</doc>")) for a in kept for p in a["text"])
    assert kept[0]["text"][0] != kept[0]["title"]


def test_nsmc_dev_split_is_fixed_and_labelled_subsets_come_from_the_rest() -> None:
    from common.nsmc import NSMC_DEV_SIZE, labelled_subset, nsmc_split

    pool, dev = nsmc_split(149_995)
    assert len(dev) == NSMC_DEV_SIZE and len(pool) == 149_995 - NSMC_DEV_SIZE and not set(pool) & set(dev)
    np.testing.assert_array_equal(nsmc_split(149_995)[1], dev)  # the same dev set for every run
    assert len(nsmc_split(400)[1]) == 20  # 5% of a small file
    first, again, other = (labelled_subset(pool, 1000, s) for s in (1, 1, 2))
    np.testing.assert_array_equal(first, again)  # a seed is a subset: paired across arms
    assert len(first) == 1000 and set(first) <= set(pool) and set(first) != set(other)
    assert labelled_subset(pool, 0, 1) is pool and len(labelled_subset(pool, 10**6, 1)) == len(pool)
    with pytest.raises(UserError):
        nsmc_split(100, dev_size=60)
