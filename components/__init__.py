"""Pulumi components: one ComponentResource per file. They import `stack`, never the reverse."""
