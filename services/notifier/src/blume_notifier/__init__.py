"""blume_notifier"""
