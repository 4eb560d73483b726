"""The audit log (AUDIT-1..3): writing it, reading it, sentences, anchors, carrying it across a restore."""
