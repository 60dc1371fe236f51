"""team.*"""
