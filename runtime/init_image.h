// The sandbox init (runtime/init_main.cc), linked into fnexec as bytes by runtime/embed.py.
#pragma once

extern "C" {
extern const unsigned char fnexec_init_image[];
extern const unsigned char fnexec_init_image_end[];
}
