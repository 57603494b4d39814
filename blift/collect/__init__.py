"""Collectors: stages whose input is a request table and whose output is items, comments, media."""
