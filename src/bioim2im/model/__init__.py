"""The network (one backbone, several heads) and its checkpoints, shared by training and prediction."""
