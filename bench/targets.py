"""The fan-out modes compared, and the targets they are measured against
(see docs/benchmarks.md)."""

MODES = ("append", "whole-per-chunk", "whole-per-token")
MODE_NOTES = {
    "append": "this design: tokens to the asker, one append per committed chunk to observers",
    "whole-per-chunk": "baseline (b): sentence commits, every observer gets the whole message each time",
    "whole-per-token": "baseline (a): every token rewrites the body in the DB and goes, whole, to everyone",
}

TARGET_OBSERVER_RATIO = 1.5
TARGET_ASKER_RATIO = 2.0
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_CAPACITY_P99_MS = 50.0
TARGET_CAPACITY_LEVEL = 100
TARGET_IDLE_KB = 30.0
