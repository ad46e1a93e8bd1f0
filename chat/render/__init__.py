"""Rendering: Markdown to sanitized HTML by stable blocks, and the fragments
and pieces that grow a reply's body on a page."""
