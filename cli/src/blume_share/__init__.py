"""blume_share"""
