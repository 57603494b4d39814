"""Instruction records: verbalization and versioned templates."""
