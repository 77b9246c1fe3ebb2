// Uses the installed despeck: one training step of a tiny deSpeckNet and a checkpoint round trip.
#include <cstdio>
#include <despeck/despeck.hpp>
#include <despeck/io/checkpoint.hpp>

int main(int argc, char** argv) {
    using namespace despeck;
    std::printf("%s\n", describe_runtime().c_str());
    DeSpeckNetConfig config;
    config.depth = 3;
    config.filters = 4;
    config.channels = 1;
    DeSpeckNet<float> model(config, 7);
    Tensor<float> x(Shape{1, 8, 8, 1}, 0.5f), ref(Shape{1, 8, 8, 1}, 0.4f);
    Adam<float> adam;
    const Losses<float> before = model.train_step(x.view(), ref.view(), {}, adam, 1e-3);
    const Losses<float> after = model.train_step(x.view(), ref.view(), {}, adam, 1e-3);
    std::printf("loss %g -> %g\n", before.total, after.total);
    if (argc > 1) {
        io::save_checkpoint(argv[1], model, &adam);
        auto loaded = io::load_model<float>(argv[1]);
        if (loaded.config() != model.config()) return 2;
    }
    return after.total < before.total ? 0 : 1;
}
