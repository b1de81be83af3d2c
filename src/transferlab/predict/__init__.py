"""Predicting downstream performance before spending compute: transferability scores of models on a task
(`transferability`) and scaling laws fitted to small runs and extrapolated (`scaling`). numpy and scipy
only; nothing here depends on the training loop."""
