"""Training the letters model from Python, without the CLI: the whole loop in about twenty lines.

Run: python examples/04_train_letters.py [DATA_DIR] [--quick]
With a folder of EMNIST-format files (e.g. ../shared/data/handwritten-letters) it trains on
those; without, on generated letters. --quick trains on a small slice for a few seconds.
"""

import sys

import numpy as np

import microconv as mc
from microconv.engine.optim import Adam
from microconv.letters.checkpoint import Classifier
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing

args = [a for a in sys.argv[1:] if a != "--quick"]
quick = "--quick" in sys.argv
if args:
    train_images, train_labels = mc.load_emnist(args[0], "train")
    test_images, test_labels = mc.load_emnist(args[0], "test")
else:
    train_images, train_labels = mc.generated_letters(1024 if quick else 20000, seed=1)
    test_images, test_labels = mc.generated_letters(512 if quick else 2000, seed=2)

batch, epochs = 64, (2 if quick else 3)
prep = Preprocessing()                            # pixels / 256, then the seed's normalisation
model = ConvoAlphabetModel(seed=0)
x = mc.Tensor.leaf(np.zeros((batch, 1, 28, 28), np.float32), model.backend)   # fed each step
target = mc.Tensor.leaf(np.zeros((batch, 26), np.float32), model.backend)     # one-hot labels
loss = mc.nll_loss(model(x), target)              # the graph is built once, here
optimizer = Adam(model.named_parameters(), lr=2e-3)
rng = np.random.default_rng(0)

for epoch in range(1, epochs + 1):
    order = rng.permutation(len(train_images))
    for start in range(0, len(order) - batch + 1, batch):
        chosen = order[start:start + batch]
        x.assign(prep.apply(train_images[chosen]))
        target.assign(mc.one_hot(train_labels[chosen], 26))
        loss.backward()                           # evaluates the loss lazily, then gradients
        optimizer.step()
    print(f"epoch {epoch}: last batch loss {loss.item():.3f}")

classifier = Classifier(model, prep)
predicted = classifier.predict(test_images).argmax(axis=1)
print(f"test accuracy {np.mean(predicted == test_labels):.3f} on {len(test_labels)} letters")
