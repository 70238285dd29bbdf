"""Protocol interfaces beyond `harness.api`: what the methods of one modality implement and its tasks drive.

A task and the methods it scores never import each other; both import the interface from here.
"""
