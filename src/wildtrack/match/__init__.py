"""Turning gallery search hits into an identity decision: which known turtle is this, or a new one?"""
