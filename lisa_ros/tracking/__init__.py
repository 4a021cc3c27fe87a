"""Following an answer's objects over later frames (ROS-free): :class:`Tracker` and its pieces."""
from lisa_ros.tracking.tracker import (LOST, OCCLUDED, STATES, TRACKING, UNCERTAIN, Correction, Snapshot,
                                       TrackedObject, Tracker, TrackerOptions)

__all__ = ["LOST", "OCCLUDED", "STATES", "TRACKING", "UNCERTAIN", "Correction", "Snapshot", "TrackedObject",
           "Tracker", "TrackerOptions"]
