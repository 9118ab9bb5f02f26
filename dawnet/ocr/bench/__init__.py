"""The benchmark protocol (``dawnet bench``): one fixed, reproducible run that trains the reference models and
measures them side by side, accuracy next to cost, with the protocol written down in the report.

Protocol (every profile):

1. **Data** is built from the versioned specs (``hw-lines-v1``, ``digits-v1``, ``pages-v1``) into a data
   folder and reused when the checksums match. Smaller profiles use a *prefix* of each published split: item
   ``i`` of a split is generated from ``(spec seed, split, i)`` alone, so the cpu profile's 300 test lines are
   exactly the first 300 lines of the full test split. Test fonts are never seen in training.
2. **Recognizers** (the presets ``crnn`` and ``attn``, plus every ``--model``) train on the same lines:
   the training split of ``hw-lines-v1`` plus ``digits-v1`` (the pages hold both kinds of lines), with the
   same recipe (:data:`dawnet.ocr.recipes.RECOGNIZER`: AdamW, weight decay 1e-4, super-convergence one-cycle
   with annihilation, gradient clip 5), batch size, number of optimizer steps and seed: an equal budget of
   training lines. Each model is saved, reloaded from its checkpoint file and scored as reloaded.
3. **The character LM** (``charlm``, Kneser-Ney n-gram) trains on the LM text of ``hw-lines-v1`` (never on
   test lines). Every recognizer is scored greedy, and with beam search + LM shallow fusion on the text lines
   (beam search alone on the digit strings: they are random, and an English LM only hurts them).
4. **The detector** (``yolo``; ``yolo_large`` on GPUs) trains on the ``pages-v1`` training pages.
5. **Test sets**: ``seen`` (training fonts, held-out texts: shows the font gap), ``test`` (unseen fonts),
   ``digits`` (real handwritten MNIST digit strings), ``pages`` (detector mAP; page CER of detect + read,
   next to the recognizer's CER on the true boxes of the same lines).
6. **Cost** beside every accuracy: parameters, GFLOPs per line (median test width) or page (``dawnet.cost``),
   training time, latency at batch 1 and 32 (median of repeats after a warm-up, model + greedy decoding),
   throughput, and training utilization (``3 x forward FLOPs x samples / train time / measured peak``).

Same seed, same machine, same thread count: the accuracy columns reproduce exactly (timings do not).

The package holds one concept per module: ``profiles`` (sizes and budgets), ``schema`` (the typed
``results.json``), ``data`` (building the data, the seen-font lines, the test sets), ``training`` (how each
model trains), ``cost`` (params, GFLOPs, latency, utilization), ``run`` (the protocol end to end), ``report``
(the table and ``report.md``), ``figures`` (Pareto fronts, training curves) and ``compare`` (two runs).
"""

from dawnet.ocr.bench.compare import compare
from dawnet.ocr.bench.cost import detector_cost, recognizer_cost, train_utilization
from dawnet.ocr.bench.data import SeenFontLines, line_test_sets, prepare_data
from dawnet.ocr.bench.figures import draw_figures, pareto_front
from dawnet.ocr.bench.profiles import DETECTORS, PROFILES, RECOGNIZERS, Profile, get_profile
from dawnet.ocr.bench.report import format_table, write_report
from dawnet.ocr.bench.run import run_bench, save_and_reload
from dawnet.ocr.bench.schema import FORMAT, FORMAT_VERSION, Results, check_results
from dawnet.ocr.bench.training import build_recognizer, line_loader, train_detector, train_recognizer

__all__ = [
    "Profile",
    "PROFILES",
    "RECOGNIZERS",
    "DETECTORS",
    "get_profile",
    "Results",
    "FORMAT",
    "FORMAT_VERSION",
    "check_results",
    "prepare_data",
    "SeenFontLines",
    "line_test_sets",
    "line_loader",
    "build_recognizer",
    "train_recognizer",
    "train_detector",
    "recognizer_cost",
    "detector_cost",
    "train_utilization",
    "run_bench",
    "save_and_reload",
    "format_table",
    "write_report",
    "draw_figures",
    "pareto_front",
    "compare",
]
