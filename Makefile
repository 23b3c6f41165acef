# FlexMUSE developer commands. `make test` installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned exactly: a looser pin makes pip fetch a different multi-GB build.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2

.PHONY: install test test-quick app space demo ablation bench clean

# as root, the Java runtime METEOR and the PTB tokenizer of the VIST metrics run on comes from Debian
# (without it those are skipped with the reason; slim images lack the man folder its package writes to)
install: $(STAMP)
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { command -v java >/dev/null || { mkdir -p /usr/share/man/man1 && apt-get update -qq && apt-get install -y -qq --no-install-recommends default-jre-headless; } >/dev/null 2>&1; } || true

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[openclip,train,eval,test,demo,bench,quantization]"
	touch $(STAMP)

# as root, the browser test's Chromium and its driver come from Debian (skipped with a reason without them)
test: install
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { command -v chromedriver >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >/dev/null 2>&1; } || true
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -n $(PYTEST_WORKERS) tests

# the quick loop while developing: everything but the tests marked slow (learning, several processes)
test-quick: install
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" tests

# The web demo (app.py) on http://127.0.0.1:7860 with the model `make demo` trains (FLEXMUSE_MODEL=... for another).
app: install
	$(PY) app.py

# A Hugging Face Space folder (space/) for the web demo with the model `make demo` trains and corpus examples.
space: install
	$(VENV)/bin/flexmuse make-space --out space --model $${FLEXMUSE_MODEL:-out/dpo} --data data/corpus --overwrite

# The main job: offline corpus -> a CLIP pretrained (once) on a larger corpus of the same kind -> SFT of
# the tiny preset on that frozen CLIP -> mscDPO -> articles for held-out topics + metrics. A rerun
# starts over (--overwrite_output_dir); --quiet: a script's error is its one line, without the
# launcher's traceback below it.
ACCELERATE := $(VENV)/bin/accelerate launch --quiet --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no
CORPUS := data/corpus/flexmuse_corpus.json
CLIP := out/clip/model.safetensors
# the CLIP's own, larger corpus: CLIP_CORPUS in flexmuse_training/clip_pretraining.py says why
CLIP_CORPUS := data/clip_corpus/flexmuse_corpus.json

$(CORPUS): | $(STAMP)
	$(VENV)/bin/flexmuse make-corpus --out data/corpus --articles 400 --seed 0 --lang zh

$(CLIP_CORPUS): | $(STAMP)
	$(VENV)/bin/flexmuse make-corpus --out data/clip_corpus --articles 4000 --seed 11 --eval-articles 50 --lang zh

$(CLIP): $(CLIP_CORPUS)
	HF_HUB_OFFLINE=1 $(PY) training/pretrain_clip.py --dataset data/clip_corpus --output_dir out/clip --overwrite_output_dir true --disable_tqdm true

demo: install $(CORPUS) $(CLIP)
	HF_HUB_OFFLINE=1 $(ACCELERATE) training/sft.py --config training/configs/tiny.yaml --encoder_name_or_path out/clip --output_dir out/sft --overwrite_output_dir true --disable_tqdm true
	HF_HUB_OFFLINE=1 $(ACCELERATE) training/dpo.py --config training/configs/tiny.yaml --model_name_or_path out/sft --output_dir out/dpo --overwrite_output_dir true --disable_tqdm true
	HF_HUB_OFFLINE=1 $(PY) training/demo.py --model SFT=out/sft --model mscDPO=out/dpo --data data/corpus --out demo_out

# The paper's Table 2 rows trained by flags on the offline corpus, scored on its test split.
ablation: install $(CORPUS) $(CLIP)
	HF_HUB_OFFLINE=1 $(PY) training/ablation.py --data data/corpus --out out/ablation --report bench/ABLATION.md

# Benchmarks (by hand, never part of the tests): each appends its table to bench/RESULTS.md.
bench: install
	HF_HUB_OFFLINE=1 $(PY) bench/bench_generate.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_dpo.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_train.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_train_t5.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_decode.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_split.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_feature_store.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_memory.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_pipeline.py
	HF_HUB_OFFLINE=1 $(PY) bench/bench_repetition.py --model SFT=out/sft --model mscDPO=out/dpo --data data/corpus
	HF_HUB_OFFLINE=1 $(PY) bench/bench_rerank.py --model SFT=out/sft --model mscDPO=out/dpo --data data/corpus
	HF_HUB_OFFLINE=1 $(PY) bench/bench_quantized.py --model SFT=out/sft --model mscDPO=out/dpo --data data/corpus

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache data out demo_out eval_out space
