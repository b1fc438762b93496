"""What a run keeps to resume and reads back without trusting it: checkpoints, the safe reader of
their tensors and state, what a snapshot holds, and the check of a checkpoint against its run."""
