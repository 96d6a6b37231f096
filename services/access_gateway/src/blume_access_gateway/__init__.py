"""blume_access_gateway"""
