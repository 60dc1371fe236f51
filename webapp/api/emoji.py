"""emoji.*"""
