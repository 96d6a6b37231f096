"""blume_link_issuer"""
