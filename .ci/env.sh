# Environment for CI and local test runs (sourced by .ci/run; imascl_ray.testing.TEST_ENVIRONMENT, which
# the tests and benchmarks apply, holds the same).
# No hub on these machines; Ray without token auth on a local cluster, and with fast health checks
# so that ray.train.report() does not cost 2 s a call; MLflow's server without its job runner.
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE=disabled
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1
export RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
export PYTHONUNBUFFERED=1
