"""Training and fine-tuning LISA (LoRA / QLoRA): configuration, the trainer, training conversations,
losses, the object encoder's training and a run's outputs (merged folder, delta). ROS-free."""
