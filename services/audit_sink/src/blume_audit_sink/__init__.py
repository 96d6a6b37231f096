"""blume_audit_sink"""
