"""blume_share_dispatcher"""
