"""ReasonSeg evaluation: gIoU / cIoU metrics and the evaluation runner. ROS-free."""
