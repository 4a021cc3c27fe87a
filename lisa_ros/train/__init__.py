"""Training and fine-tuning LISA (LoRA / QLoRA), data readers, losses, export. ROS-free."""
