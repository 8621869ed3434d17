"""granule"""
